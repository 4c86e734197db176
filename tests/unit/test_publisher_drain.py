"""The publisher's SIGTERM drain when the deadline really passes: a broker that accepts the TCP
connection and never answers CONNECT (a socket that never accepts), so nothing is acknowledged. The
warning names each reading not delivered, and the spool keeps them for the next start."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import pytest

from publisher.app import Publisher
from publisher.spool import Spool
from twinpipe.config.loading import parse_config


def test_a_drain_past_its_deadline_names_every_reading_and_leaves_them_in_the_spool(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    silent_broker = socket.create_server(("127.0.0.1", 0))  # connects, never answers CONNECT
    port = silent_broker.getsockname()[1]
    config = parse_config(
        {
            "mqtt": {"host": "127.0.0.1", "port": port},
            "publisher": {"spool_dir": str(tmp_path / "spool"), "shutdown_timeout_s": 0.5},
        },
        {},
    )
    with silent_broker, caplog.at_level(logging.WARNING, logger="publisher"), Publisher(config) as publisher:
        for _ in range(5):
            publisher.accept("board7", {"t": 0.0}, time.time_ns())
        started = time.monotonic()
        publisher._drain(started + config.publisher.shutdown_timeout_s)
        waited_s = time.monotonic() - started
    assert waited_s >= config.publisher.shutdown_timeout_s, "gave up before the deadline"
    (warning,) = [r.getMessage() for r in caplog.records if "shutdown timeout" in r.getMessage()]
    assert "5 readings not delivered" in warning
    assert f"board7 (boot {publisher.boot}) seq 0-4" in warning
    assert "stay in the spool" in warning
    recovered = Spool(tmp_path / "spool").recover()
    assert [(e.device, e.boot, e.seq) for e, _ in recovered] == [
        ("board7", publisher.boot, s) for s in range(5)
    ]
