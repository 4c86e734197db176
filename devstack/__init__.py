"""Local servers on free loopback ports: what the tests, `make demo` and the benchmarks run against.

Nothing here is used in production; docker compose runs the real upstream images there.
"""
