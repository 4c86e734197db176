"""A stage's /healthz endpoint: 200 while every liveness check passes, 503 naming the ones that fail.

Container orchestrators restart a stage whose /healthz fails, so checks cover what a restart fixes
(a dead worker thread, a stuck loop), not outages of the servers around it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Check = Callable[[], bool]


class Heartbeat:
    """Liveness of a loop: it beats on every pass; silent for longer than `max_age_s` means stuck."""

    def __init__(self, max_age_s: float) -> None:
        self.max_age_s = max_age_s
        self._last = time.monotonic()

    def beat(self) -> None:
        self._last = time.monotonic()

    def alive(self) -> bool:
        return time.monotonic() - self._last < self.max_age_s


class HealthServer:
    """Serves GET /healthz on host:port; port 0 turns it off."""

    def __init__(self, host: str, port: int, checks: dict[str, Check]) -> None:
        self.checks = checks
        self._server = ThreadingHTTPServer((host, port), self._handler()) if port else None
        if self._server:
            self._server.daemon_threads = True

    def failing(self) -> list[str]:
        return [name for name, check in self.checks.items() if not check()]

    def __enter__(self) -> HealthServer:
        if self._server:
            threading.Thread(target=self._server.serve_forever, name="health", daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        health = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                if self.path != "/healthz":
                    self.send_error(404)
                    return
                failing = health.failing()
                body = json.dumps({"status": "fail" if failing else "pass", "failing": failing}).encode()
                self.send_response(503 if failing else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
