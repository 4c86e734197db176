"""Commands to boards and their lifecycle events, as they travel through Kafka and MQTT, defined once.

A command (Kafka `twin.commands`, MQTT `twin/{device}/command`, the payload unchanged on the way):

    {"v": 1, "id": "<uuid4 hex>", "device": str, "settings": {"<name>": number|bool|str},
     "desired_version": int, "created_ns": int, "expires_ns": int}

A command event (MQTT `twin/{device}/command/events`, Kafka `twin.command_events`):

    {"v": 1, "id": str, "device": str, "state": "sent"|"delivered"|"written"|"acknowledged"|"failed"|
     "expired", "time_ns": int, "by": "bridge"|"publisher", "detail": str, "reported": {...}}

Times are ns since the Unix epoch (wall clock). The shapes are fixed by the lead (prompts/interfaces.md)
and shared with the state stage, which produces the commands and consumes the events (it keeps them as
the `to_json()` dicts in its state documents). The checks
here are the ones the way down needs: a command id and setting value travel on a serial line, so
they may hold no whitespace.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from twinpipe.names import NAME_PATTERN, device_problem

VERSION = 1
STATES = ("sent", "delivered", "written", "acknowledged", "failed", "expired")
BY = ("bridge", "publisher")
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")  # a uuid4 hex fits; no whitespace for the serial line
TEXT_VALUE_PATTERN = re.compile(r"[!-~]{1,64}")  # printable ASCII without spaces
MAX_MESSAGE_EXPIRY_S = 4_294_967_295  # MQTT 5 Message Expiry Interval is a four-byte integer
NS_PER_S = 1_000_000_000

Setting = bool | int | float | str


class CommandError(ValueError):
    """A payload that is no valid command (or command event); the message says which key is wrong."""


@dataclass(frozen=True, slots=True)
class Command:
    id: str
    device: str
    settings: dict[str, Setting]
    desired_version: int
    created_ns: int
    expires_ns: int

    def expired(self, now_ns: int) -> bool:
        return is_expired(self.expires_ns, now_ns)

    def to_json(self) -> dict[str, Any]:
        return {
            "v": VERSION,
            "id": self.id,
            "device": self.device,
            "settings": dict(self.settings),
            "desired_version": self.desired_version,
            "created_ns": self.created_ns,
            "expires_ns": self.expires_ns,
        }


@dataclass(frozen=True, slots=True)
class CommandEvent:
    id: str
    device: str
    state: str
    time_ns: int
    by: str
    detail: str = ""
    reported: dict[str, Setting] | None = field(default=None)

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "v": VERSION,
            "id": self.id,
            "device": self.device,
            "state": self.state,
            "time_ns": self.time_ns,
            "by": self.by,
            "detail": self.detail,
        }
        if self.reported is not None:
            document["reported"] = dict(self.reported)
        return document


def is_expired(expires_ns: int, now_ns: int) -> bool:
    """A command is expired from its `expires_ns` on (inclusive): no life left to deliver it in."""
    return now_ns >= expires_ns


def remaining_s(expires_ns: int, now_ns: int) -> int:
    """The MQTT 5 Message Expiry Interval (s) for a command expiring at `expires_ns`: the remaining
    life rounded up (a command with 0.2 s left gets 1 s rather than 0, which MQTT would read as
    "expires now"), capped at the field's maximum 2^32 - 1. 0 when expired (do not publish)."""
    left = expires_ns - now_ns
    if left <= 0:
        return 0
    return min(-(-left // NS_PER_S), MAX_MESSAGE_EXPIRY_S)


def new_command(
    device: str, settings: dict[str, Setting], desired_version: int, created_ns: int, expires_ns: int
) -> Command:
    """A command with a fresh id (uuid4 hex), its settings checked as `decode_command` checks them."""
    checked = {name: check_setting(name, value) for name, value in settings.items()}
    return Command(uuid.uuid4().hex, device, checked, desired_version, created_ns, expires_ns)


def _object(payload: bytes | None, max_bytes: int, what: str) -> dict[str, Any]:
    if payload is None:
        raise CommandError(f"{what} is empty (a tombstone) where a JSON object was expected")
    if len(payload) > max_bytes:
        raise CommandError(f"{what} of {len(payload)} bytes exceeds the limit of {max_bytes} bytes")
    try:
        document = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CommandError(f"{what} is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise CommandError(f"{what} is not a JSON object")
    if document.get("v") != VERSION:
        raise CommandError(f"{what} version v={document.get('v')!r}, expected {VERSION}")
    return document


def _int(document: dict[str, Any], key: str) -> int:
    value = document.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not -(2**63) <= value < 2**63:
        raise CommandError(f"{key}: expected an integer (int64), got {value!r}")
    return value


def _id(document: dict[str, Any]) -> str:
    value = document.get("id")
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise CommandError(f"id: expected a command id matching {ID_PATTERN.pattern}, got {value!r}")
    return value


def _device(document: dict[str, Any]) -> str:
    value = document.get("device")
    problem = device_problem(value, allow_probe=False) if isinstance(value, str) else "not a string"
    if problem:
        raise CommandError(f"device: {value!r} is not a device id ({problem})")
    return value  # type: ignore[return-value]


def check_setting(name: Any, value: Any) -> Setting:
    """A setting name and value that can travel to a board on a serial line, or CommandError."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise CommandError(f"settings: {name!r} is not a setting name ({NAME_PATTERN.pattern})")
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        if not math.isfinite(value) or abs(value) > 1e15:
            raise CommandError(f"settings.{name}: {value!r} is not a finite number within ±1e15")
        return value
    if isinstance(value, str) and TEXT_VALUE_PATTERN.fullmatch(value):
        return value
    raise CommandError(
        f"settings.{name}: expected a number, a bool or text without spaces (1-64 printable ASCII), "
        f"got {value!r}"
    )


def decode_command(payload: bytes | None, max_bytes: int = 65536) -> Command:
    """Parse and check a command; CommandError names the first wrong key."""
    document = _object(payload, max_bytes, "command")
    settings = document.get("settings")
    if not isinstance(settings, dict) or not settings:
        raise CommandError(f"settings: expected a non-empty object, got {settings!r}")
    checked = {name: check_setting(name, value) for name, value in settings.items()}
    command = Command(
        id=_id(document),
        device=_device(document),
        settings=checked,
        desired_version=_int(document, "desired_version"),
        created_ns=_int(document, "created_ns"),
        expires_ns=_int(document, "expires_ns"),
    )
    if command.expires_ns < command.created_ns:
        raise CommandError(f"expires_ns {command.expires_ns} is before created_ns {command.created_ns}")
    return command


def encode_command(command: Command) -> bytes:
    return json.dumps(command.to_json(), separators=(",", ":")).encode()


def decode_event(payload: bytes | None, max_bytes: int = 65536) -> CommandEvent:
    """Parse and check a command event; CommandError names the first wrong key."""
    document = _object(payload, max_bytes, "command event")
    state, by, detail = document.get("state"), document.get("by"), document.get("detail", "")
    if state not in STATES:
        raise CommandError(f"state: expected one of {', '.join(STATES)}, got {state!r}")
    if by not in BY:
        raise CommandError(f"by: expected one of {', '.join(BY)}, got {by!r}")
    if not isinstance(detail, str):
        raise CommandError(f"detail: expected text, got {detail!r}")
    reported = document.get("reported")
    if reported is not None:
        if not isinstance(reported, dict):
            raise CommandError(f"reported: expected an object, got {reported!r}")
        reported = {name: check_setting(name, value) for name, value in reported.items()}
    if state == "acknowledged" and reported is None:
        raise CommandError("reported: an acknowledged event carries the settings the board reports")
    return CommandEvent(
        id=_id(document),
        device=_device(document),
        state=state,
        time_ns=_int(document, "time_ns"),
        by=by,
        detail=detail,
        reported=reported,
    )


def encode_event(event: CommandEvent) -> bytes:
    return json.dumps(event.to_json(), separators=(",", ":")).encode()
