"""A stage's HTTP endpoints: /healthz (liveness), /readyz (readiness) and /metrics (Prometheus).

Container orchestrators restart a stage whose /healthz fails, so liveness checks cover what a restart
fixes (a dead worker thread, a stuck loop), not outages of the servers around it. /readyz adds the
connections the stage needs to do its work (MQTT connected, Kafka reachable): it tells an operator,
or a load balancer, that the stage is up but waiting. A check that can say why it fails returns the
reason, served under "reasons". /metrics serves the process's
prometheus-client registry.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

Check = Callable[[], bool | str]
"""A check returns True to pass, and False or a one-line reason (a string) to fail."""


class Heartbeat:
    """Liveness of a loop: it beats on every pass; silent for longer than `max_age_s` means stuck."""

    def __init__(self, max_age_s: float) -> None:
        self.max_age_s = max_age_s
        self._last = time.monotonic()

    def beat(self) -> None:
        self._last = time.monotonic()

    def alive(self) -> bool:
        return time.monotonic() - self._last < self.max_age_s


def failing(checks: dict[str, Check]) -> dict[str, str | None]:
    """The failing checks, each with its reason if it gave one."""
    results = {name: check() for name, check in checks.items()}
    return {
        name: result if isinstance(result, str) else None
        for name, result in results.items()
        if isinstance(result, str) or not result
    }


class HealthServer:
    """Serves /healthz, /readyz and /metrics on host:port; port 0 turns it off.

    /readyz fails when a liveness check or a readiness check fails.
    """

    def __init__(
        self, host: str, port: int, checks: dict[str, Check], ready_checks: dict[str, Check] | None = None
    ) -> None:
        self.checks = checks
        self.ready_checks = {**checks, **(ready_checks or {})}
        self._server = ThreadingHTTPServer((host, port), self._handler()) if port else None
        if self._server:
            self._server.daemon_threads = True

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else 0

    def __enter__(self) -> HealthServer:
        if self._server:
            threading.Thread(target=self._server.serve_forever, name="health", daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _reply(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _checks(self, checks: dict[str, Check]) -> None:
                failed = failing(checks)
                report: dict = {"status": "fail" if failed else "pass", "failing": list(failed)}
                reasons = {name: reason for name, reason in failed.items() if reason}
                if reasons:
                    report["reasons"] = reasons
                body = json.dumps(report).encode()
                self._reply(503 if failed else 200, "application/json", body)

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    self._checks(server.checks)
                elif path == "/readyz":
                    self._checks(server.ready_checks)
                elif path == "/metrics":
                    self._reply(200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY))
                else:
                    self.send_error(404)

        return Handler
