"""Reaching something that may not be there yet (a server, a serial port): retry with backoff, log
once, give up only on stop."""

from __future__ import annotations

import logging
import threading
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
