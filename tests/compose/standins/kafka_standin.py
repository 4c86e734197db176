"""TEST STAND-IN for apache/kafka: run Tansu from the upstream image's KAFKA_* environment.

`python3 standin.py` execs the broker, listening on the PLAINTEXT listener's port of KAFKA_LISTENERS
and advertising the PLAINTEXT address of KAFKA_ADVERTISED_LISTENERS (the names the compose file
gives). `python3 standin.py api-versions --bootstrap-server HOST:PORT` sends a Kafka ApiVersions
request (v0) and exits 0 only if the broker answers it without an error, as the upstream healthcheck
script `kafka-broker-api-versions.sh` does.
"""

from __future__ import annotations

import os
import socket
import struct
import sys

TANSU = "/opt/tansu/tansu"
API_VERSIONS = 18


def plaintext(listeners: str, variable: str) -> tuple[str, int]:
    """`PLAINTEXT://kafka:9092,CONTROLLER://:9093` → ("kafka", 9092)."""
    for listener in listeners.split(","):
        name, _, address = listener.strip().partition("://")
        if name == "PLAINTEXT":
            host, _, port = address.rpartition(":")
            return host, int(port)
    sys.exit(f"kafka stand-in: no PLAINTEXT listener in {variable}={listeners!r}")


def run_broker() -> None:
    _, port = plaintext(os.environ.get("KAFKA_LISTENERS", "PLAINTEXT://:9092"), "KAFKA_LISTENERS")
    host, advertised_port = plaintext(
        os.environ.get("KAFKA_ADVERTISED_LISTENERS", f"PLAINTEXT://localhost:{port}"),
        "KAFKA_ADVERTISED_LISTENERS",
    )
    print(f"kafka stand-in: Tansu on :{port}, advertised as {host}:{advertised_port}", flush=True)
    os.execv(
        TANSU,
        [
            TANSU,
            "broker",
            "--listener-url",
            f"tcp://0.0.0.0:{port}",
            "--advertised-listener-url",
            f"tcp://{host}:{advertised_port}",
        ],
    )


def api_versions(bootstrap: str) -> int:
    host, _, port = bootstrap.rpartition(":")
    client_id = b"healthcheck"
    request = struct.pack(">hhih", API_VERSIONS, 0, 1, len(client_id)) + client_id
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        size = struct.unpack(">i", receive(sock, 4))[0]
        correlation_id, error_code, count = struct.unpack(">ihi", receive(sock, size)[:10])
    if correlation_id != 1 or error_code != 0 or count <= 0:
        print(f"ApiVersions: correlation {correlation_id}, error {error_code}, {count} APIs", file=sys.stderr)
        return 1
    print(f"{bootstrap}: {count} APIs")
    return 0


def receive(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        data += chunk
    return data


if __name__ == "__main__":
    if sys.argv[1:2] == ["api-versions"]:
        args = sys.argv[2:]
        if "--bootstrap-server" not in args:
            sys.exit("usage: kafka-broker-api-versions.sh --bootstrap-server HOST:PORT")
        try:
            sys.exit(api_versions(args[args.index("--bootstrap-server") + 1]))
        except OSError as exc:
            sys.exit(f"ApiVersions failed: {exc}")
    run_broker()
