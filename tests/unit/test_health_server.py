"""The stage HTTP endpoints: liveness and readiness differ, and /metrics serves the registry."""

from __future__ import annotations

from prometheus_client import Counter

from devstack.process import free_port, http_get
from twinpipe.health import HealthServer

SERVED = Counter("twinpipe_test_served", "A counter only this test increments")


def test_ready_fails_on_its_own_checks_while_live_passes_and_metrics_are_served() -> None:
    connected = False
    port = free_port()
    SERVED.inc(3)
    with HealthServer("127.0.0.1", port, {"loop": lambda: True}, {"mqtt": lambda: connected}):
        base = f"http://127.0.0.1:{port}"
        assert http_get(f"{base}/healthz") == (200, '{"status": "pass", "failing": []}')
        assert http_get(f"{base}/readyz") == (503, '{"status": "fail", "failing": ["mqtt"]}')
        connected = True
        assert http_get(f"{base}/readyz")[0] == 200
        status, body = http_get(f"{base}/metrics")
        assert status == 200 and "twinpipe_test_served_total 3.0" in body
        assert http_get(f"{base}/nothing")[0] == 404
