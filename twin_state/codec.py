"""The records of the command topics (shapes fixed in the lead's interfaces: twin.commands,
twin.command_events) read and written as plain dicts, and the state document's bytes.

Reading refuses, with a one-line reason, anything a consumer could misread: missing keys, wrong
types, an unknown lifecycle state, another version. The stage sends refused records to the
dead-letter topic with that reason.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from twin_state.lifecycle import EVENT_STATES
from twinpipe.names import device_problem

VERSION = 1
MAX_BYTES = 65536
EVENT_SOURCES = frozenset({"bridge", "publisher"})


class RecordError(ValueError):
    """A record that is not a valid command or command event; the message is the reason."""


def new_command(
    device: str, settings: dict[str, Any], desired_version: int, created_ns: int, expires_ns: int
) -> dict[str, Any]:
    """A command as twin.commands carries it; `id` is a fresh uuid4 in hex."""
    return {
        "v": VERSION,
        "id": uuid.uuid4().hex,
        "device": device,
        "settings": dict(settings),
        "desired_version": desired_version,
        "created_ns": created_ns,
        "expires_ns": expires_ns,
    }


def encode(document: dict[str, Any]) -> bytes:
    return orjson.dumps(document)


def _object(payload: bytes | None) -> dict[str, Any]:
    if payload is None:
        raise RecordError("empty record (a tombstone) where a JSON object was expected")
    if len(payload) > MAX_BYTES:
        raise RecordError(f"record of {len(payload)} bytes exceeds {MAX_BYTES}")
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise RecordError(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise RecordError(f"expected a JSON object, got {type(document).__name__}")
    if document.get("v") != VERSION:
        raise RecordError(f"unsupported version v={document.get('v')!r} (expected {VERSION})")
    return document


def _require(document: dict[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = document.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise RecordError(f"{key}: expected {what}, got {value!r:.80}")
    return value


def _device(document: dict[str, Any]) -> str:
    device = _require(document, "device", str, "a device id")
    problem = device_problem(device, allow_probe=False)
    if problem:
        raise RecordError(f"device: {problem}")
    return device


def decode_command(payload: bytes | None) -> dict[str, Any]:
    """A twin.commands record as a dict of the documented keys; RecordError says why not."""
    document = _object(payload)
    command = {
        "v": VERSION,
        "id": _require(document, "id", str, "a command id"),
        "device": _device(document),
        "settings": _require(document, "settings", dict, "an object of settings"),
        "desired_version": _require(document, "desired_version", int, "an integer"),
        "created_ns": _require(document, "created_ns", int, "ns since the epoch"),
        "expires_ns": _require(document, "expires_ns", int, "ns since the epoch"),
    }
    if not command["id"] or not command["settings"]:
        raise RecordError("id and settings must not be empty")
    return command


def decode_event(payload: bytes | None) -> dict[str, Any]:
    """A twin.command_events record as a dict of the documented keys; RecordError says why not."""
    document = _object(payload)
    state = _require(document, "state", str, "a lifecycle state")
    if state not in EVENT_STATES:
        raise RecordError(f"state: {state!r} is not one of {sorted(EVENT_STATES)}")
    by = _require(document, "by", str, "bridge or publisher")
    if by not in EVENT_SOURCES:
        raise RecordError(f"by: {by!r} is not one of {sorted(EVENT_SOURCES)}")
    event = {
        "id": _require(document, "id", str, "a command id"),
        "device": _device(document),
        "state": state,
        "time_ns": _require(document, "time_ns", int, "ns since the epoch"),
        "by": by,
        "detail": document.get("detail") if isinstance(document.get("detail"), str) else "",
    }
    if state == "acknowledged":
        event["reported"] = _require(document, "reported", dict, "the settings the board now has")
    return event
