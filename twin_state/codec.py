"""The state document's bytes in the compacted state topic (twin.state). The command and command-event
records are read and written by `twinpipe.command_messages`, shared with the bridge and the publisher."""

from __future__ import annotations

from typing import Any

import orjson


class StateError(ValueError):
    """State-topic bytes that are no state document; the message is the reason."""


def encode_state(document: dict[str, Any]) -> bytes:
    return orjson.dumps(document)


def decode_state(payload: bytes) -> dict[str, Any]:
    """A state document (twin_state.lifecycle) from the state topic; StateError says why not."""
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise StateError(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise StateError(f"expected a JSON object, got {type(document).__name__}")
    return document
