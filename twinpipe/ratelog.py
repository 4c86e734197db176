"""Logging a repeating problem once per interval with a count, so a noisy input cannot flood the log."""

from __future__ import annotations

import logging
import time


class ThrottledLog:
    def __init__(self, logger: logging.Logger, interval_s: float = 10.0) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -self._interval_s) < self._interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        suffix = f" ({suppressed} more like this in the last {self._interval_s:.0f} s)" if suppressed else ""
        self._logger.warning(message + suffix, *args)


class RepeatFilter(logging.Filter):
    """For client libraries that log every failed reconnect (kafka-python does, at ERROR, many times a
    second during an outage): each message template of those loggers passes once per interval."""

    def __init__(self, prefixes: tuple[str, ...], interval_s: float = 30.0) -> None:
        super().__init__()
        self._prefixes = prefixes
        self._interval_s = interval_s
        self._last: dict[tuple[str, object], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self._prefixes):
            return True
        key = (record.name, record.msg)
        now = time.monotonic()
        if now - self._last.get(key, -self._interval_s) < self._interval_s:
            return False
        self._last[key] = now
        return True
