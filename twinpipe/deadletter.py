"""The dead-letter record format, shared by every stage that rejects input.

A dead letter keeps the original bytes as its value and says what went wrong in headers, so a
person (or a repair job) can read the reason next to the exact input.
"""

from __future__ import annotations

REASON = "twinpipe.reason"
STAGE = "twinpipe.stage"


def headers(reason: str, stage: str, **context: str) -> list[tuple[str, bytes]]:
    """`context` adds where the input came from, e.g. mqtt_topic=... or source="topic/partition/offset"."""
    return [(REASON, reason.encode()), (STAGE, stage.encode())] + [
        (f"twinpipe.{key}", value.encode()) for key, value in context.items()
    ]
