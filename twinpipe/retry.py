"""Connecting to a server that may not be up yet: retry with backoff, log once, give up only on stop."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from twinpipe.backoff import Backoff

T = TypeVar("T")
log = logging.getLogger("twinpipe.retry")


def until_connected(
    connect: Callable[[], T], what: str, stop: threading.Event, retry_on: tuple[type[BaseException], ...]
) -> T | None:
    """Call `connect` until it succeeds (its result) or `stop` is set (None)."""
    backoff = Backoff(0.5, 10.0)
    reported = False
    while not stop.is_set():
        try:
            result = connect()
        except retry_on as exc:
            if not reported:
                log.warning("cannot connect to %s (%s: %s); retrying", what, type(exc).__name__, exc)
                reported = True
            stop.wait(backoff.next_delay())
            continue
        if reported:
            log.info("connected to %s", what)
        return result
    return None
