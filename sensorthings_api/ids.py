"""Ids, paths and instants of the SensorThings API (OGC 18-088 §9.2, §9.3.3): pure functions.

* Entity ids in URLs take the spec's string form, `Things('nucleo-1')`; a `'` inside is doubled.
* A Thing's and a Location's id is the device id, a Datastream's `<device>:<value>`
  (twinpipe.model), an Observation's `<device>:<value>:<time in ns since the epoch>`: device ids and
  value names never contain ':', so the id is stable and says which InfluxDB point it is.
* Instants are ISO 8601 with a zone (`2026-11-30T20:00:00.123456789Z`); InfluxDB keeps nanoseconds,
  so they are formatted and parsed with up to nine fraction digits, which `datetime` cannot hold.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

VERSION_PATH = "/v1.1"
COLLECTIONS = ("Things", "Locations", "HistoricalLocations", "Datastreams", "Sensors", "ObservedProperties",
               "Observations")  # fmt: skip


_ID_SAFE = ":'-._~"  # kept as is in a path: readable ids, and ':' of Datastream ids


class BadRequest(ValueError):
    """The request is malformed (HTTP 400); the message says what is supported."""


class NotFound(LookupError):
    """No such entity or path (HTTP 404)."""


@dataclass(frozen=True, slots=True)
class Segment:
    """One path segment: a collection or navigation property name, and the id it selects (or None)."""

    name: str
    id: str | None = None


_SEGMENT = re.compile(r"([A-Za-z]+)(?:\('((?:[^']|'')*)'\)|\((\d+)\))?")


def parse_path(path: str) -> list[Segment]:
    """`Datastreams('a:b')/Observations` (the part after /v1.1/) → segments. Numeric ids (`(42)`) are
    accepted as written, since no twinpipe id is a number they simply never match."""
    segments = []
    for part in _split_outside_quotes(path.strip("/")):
        match = _SEGMENT.fullmatch(part)
        if match is None:
            raise NotFound(
                f"no resource {part!r}: expected a collection such as Things or an entity such as "
                "Things('nucleo-1') (ids in the string form, in single quotes)"
            )
        name, quoted, number = match.groups()
        entity_id = quoted.replace("''", "'") if quoted is not None else number
        segments.append(Segment(name, entity_id))
    return segments


def _split_outside_quotes(path: str) -> list[str]:
    """Split on '/' except inside a quoted id (`Things('a/b')` is one segment)."""
    parts, current, quoted = [], [], False
    for char in path:
        if char == "'":
            quoted = not quoted  # a doubled '' toggles twice: still inside
        if char == "/" and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def entity_path(collection: str, entity_id: str) -> str:
    """`Things('nucleo-1')`: the entity's path below /v1.1, id quoted for a URL."""
    quoted = entity_id.replace("'", "''")
    return f"{collection}('{quote(quoted, safe=_ID_SAFE)}')"


def observation_id(device: str, value: str, time_ns: int) -> str:
    return f"{device}:{value}:{time_ns}"


def split_observation_id(observation: str) -> tuple[str, str, int]:
    """`nucleo-1:ambient_temperature:1764532800000000000` → (device, value, time_ns)."""
    parts = observation.rsplit(":", 2)
    if len(parts) != 3 or not parts[0] or not parts[1] or not re.fullmatch(r"-?\d{1,19}", parts[2]):
        raise NotFound(f"no Observation {observation!r}: ids are '<device>:<value>:<time in ns>'")
    return parts[0], parts[1], int(parts[2])


def split_datastream_id(datastream: str) -> tuple[str, str]:
    device, sep, value = datastream.partition(":")
    if not sep or not device or not value or ":" in value:
        raise NotFound(f"no Datastream {datastream!r}: ids are '<device>:<value>'")
    return device, value


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INSTANT = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})", re.IGNORECASE
)


def format_instant(time_ns: int) -> str:
    """ns since the epoch → `2026-11-30T20:00:00.123456789Z` (fraction trimmed, none when whole)."""
    seconds, ns = divmod(time_ns, 1_000_000_000)
    text = (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f".{ns:09d}".rstrip("0") if ns else ""
    return f"{text}{fraction}Z"


def parse_instant(text: str) -> int:
    """An ISO 8601 instant with its zone → ns since the epoch; BadRequest naming the expected form."""
    match = _INSTANT.fullmatch(text.strip())
    if match is None:
        raise BadRequest(
            f"{text!r} is not an ISO 8601 instant with a zone, e.g. 2026-11-30T20:00:00Z or "
            "2026-11-30T21:00:00.5+01:00"
        )
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=UTC)
    except ValueError as exc:
        raise BadRequest(f"{text!r} is not a valid instant: {exc}") from None
    if zone.upper() != "Z":
        sign = 1 if zone[0] == "+" else -1
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 23 or minutes > 59:
            raise BadRequest(f"{text!r} is not a valid instant: zone offset {zone} out of range")
        try:
            moment -= sign * timedelta(hours=hours, minutes=minutes)
        except OverflowError:
            raise BadRequest(f"{text!r} is outside the instants InfluxDB can store") from None
    whole = (moment - _EPOCH) // timedelta(seconds=1)
    ns = whole * 1_000_000_000 + int((fraction or "").ljust(9, "0"))
    # InfluxDB stores int64 ns: 1677-09-21T00:12:43.145224192Z .. 2262-04-11T23:47:16.854775807Z.
    if not -(2**63) <= ns <= 2**63 - 1:
        raise BadRequest(
            f"{text!r} is outside the instants InfluxDB can store (1677-09-21 to 2262-04-11, int64 ns)"
        )
    return ns
