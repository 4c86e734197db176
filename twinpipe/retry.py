"""Reaching something that may not be there yet (a server, a serial port): retry with backoff, log
once, give up only on stop."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from twinpipe.backoff import Backoff

T = TypeVar("T")
log = logging.getLogger("twinpipe.retry")


def until_connected(
    connect: Callable[[], T],
    what: str,
    stop: threading.Event,
    retry_on: tuple[type[BaseException], ...],
    *,
    action: str = "connect to",
    backoff: Backoff | None = None,
) -> T | None:
    """Call `connect` until it succeeds (its result) or `stop` is set (None).

    The first failure is logged as "cannot <action> <what>", and success after failures once more.
    """
    backoff = backoff or Backoff(0.5, 10.0)
    reported = False
    while not stop.is_set():
        try:
            result = connect()
        except retry_on as exc:
            if not reported:
                log.warning("cannot %s %s (%s: %s); retrying", action, what, type(exc).__name__, exc)
                reported = True
            stop.wait(backoff.next_delay())
            continue
        if reported:
            log.info("could %s %s after retrying", action, what)
        return result
    return None


def until_done(
    attempt: Callable[[], None],
    retry_on: tuple[type[BaseException], ...],
    stop: threading.Event,
    backoff: Backoff,
    on_failure: Callable[[BaseException, float], None],
    shutdown_timeout_s: float,
) -> bool:
    """Call `attempt` until it succeeds (True), retrying what `retry_on` names after a backoff.

    Each failure is handed to `on_failure(exc, delay_s)` (health, metrics, logs are the caller's).
    Once `stop` is set, it keeps trying for at most `shutdown_timeout_s` more, then gives up (False):
    a stage's batch is then left uncommitted for Kafka to deliver again.
    """
    deadline = None
    while True:
        try:
            attempt()
            return True
        except retry_on as exc:
            if stop.is_set() and deadline is None:
                deadline = time.monotonic() + shutdown_timeout_s
            delay = backoff.next_delay()
            on_failure(exc, delay)
            if deadline is not None and time.monotonic() + delay > deadline:
                return False
            (time.sleep if deadline is not None else stop.wait)(delay)
