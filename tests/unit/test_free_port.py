"""The test harness's port picker: never the same port twice in one run, never in the ephemeral range."""

from __future__ import annotations

from devstack.process import _ephemeral_low, free_port


def test_free_port_never_hands_out_a_port_twice_and_stays_below_the_ephemeral_range() -> None:
    # 1,000 picks from ~12,000 ports: without the memory of handed-out ports, a repeat is near-certain
    # (birthday bound: 1 - exp(-1000^2 / (2 * 12000)) > 0.99).
    ports = [free_port() for _ in range(1000)]
    assert len(set(ports)) == len(ports)
    assert max(ports) < _ephemeral_low()
