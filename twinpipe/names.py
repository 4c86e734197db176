"""Which strings may name things twinpipe stores in InfluxDB, defined once.

Every point twinpipe writes is

    <measurement>,device=<id>[,thing=<key>][,origin=replay][,<key>=<value>...] <value>=<float>,...,
    boot="..",seq=..i <t>

(`thing` for a device of an entry in `model.things`, `origin` for a replayed reading), so a device
id is a tag value, configured tags (`ingestion.tags`, `ingestion.device_tags`) are tag keys and
values, and the names in an envelope's `values` are field keys beside twinpipe's own fields `seq`
and `boot`. The rules below keep every such string storable *unchanged* and queryable; each is
derived from InfluxDB's documentation or behaviour:

* `time` is not a field or tag key: InfluxDB drops such a key (and its value) or rejects the point,
  because InfluxQL could not tell it from the timestamp (influxdb#1834, #23024; InfluxDB 1.x/2.x
  "Line protocol", *Naming restrictions*).
* Keys starting with `_` are reserved by InfluxDB 2 (`_measurement`, `_field`, `_value`, `_start`,
  ...): "Measurement names, tag keys, and field keys cannot begin with an underscore".
* A tag key and a field key of the same name in one measurement make queries ambiguous: InfluxQL
  then reads `"device"` as the field, so `WHERE "device" = 'x'` finds nothing. So the tag keys
  twinpipe writes (`device` and the configured tags) and the field keys (value names, `seq`, `boot`)
  never share a name.
* Tag values cannot be empty ("Tag values cannot be empty; instead, omit the tag"); InfluxDB rejects
  the point.
* Line protocol ends a point at a newline and has no escape for control characters, and it escapes
  only `,`, `=` and space in tag values: a backslash at the end of a tag value, or before one of
  those, cannot be written so that it reads back unchanged (`C\\` was stored as `C `).

Device ids and value names are restricted further, to short ASCII identifiers, because they also
travel as MQTT topic levels, Kafka keys, Prometheus label values and Grafana variables. Patterns
are applied with `fullmatch`: `$` would also match before a final newline.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

DEVICE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")

DEVICE_TAG = "device"  # the tag key twinpipe itself writes
THING_TAG = "thing"  # the tag key of a modelled device's thing entry (model.things.<key>)
ORIGIN_TAG = "origin"  # the tag key the ingestion writes for replayed readings (envelope `origin`)
TWINPIPE_FIELDS = frozenset({"seq", "boot"})  # the field keys twinpipe itself writes
INFLUX_RESERVED_KEYS = frozenset({"time"})  # neither a tag nor a field key in InfluxDB
# The latency probe's readings: outside DEVICE_PATTERN, so no configured device can take the name,
# yet an ordinary tag value, so its points are stored and queried like any other.
PROBE_DEVICE = "_probe"

_WHY_RESERVED = {
    DEVICE_TAG: "it is the tag key twinpipe writes for the device id",
    THING_TAG: "it is the tag key twinpipe writes for a modelled device's thing (model.things)",
    ORIGIN_TAG: "it is the tag key twinpipe writes for replayed readings (origin=replay)",
    "seq": "it is a field twinpipe writes itself",
    "boot": "it is a field twinpipe writes itself",
    "time": "InfluxDB reserves it for the timestamp and drops such a key",
}
_LINE_PROTOCOL_ESCAPED = ",= "  # escapable in tag keys/values and field keys; a backslash before them is lost


def _identifier_problem(name: str, what: str) -> str | None:
    if not name:
        return f"{what} is empty"
    if NAME_PATTERN.fullmatch(name):
        return None
    if name.startswith("_"):
        return f"{what} {name!r:.80} starts with '_', which InfluxDB 2 reserves"
    return f"{what} {name!r:.80} must match {NAME_PATTERN.pattern} in full"


@lru_cache(maxsize=4096)  # a few names per fleet, checked for every reading
def value_name_problem(name: str) -> str | None:
    """Why `name` cannot be a value (field) name in an envelope, or None if it can."""
    problem = _identifier_problem(name, "value name")
    if problem is None and name in _WHY_RESERVED:
        problem = f"value name {name!r} is reserved: {_WHY_RESERVED[name]}"
    return problem


def is_value_name(name: str) -> bool:
    return value_name_problem(name) is None


@lru_cache(maxsize=65536)  # one entry per device of the fleet
def device_problem(device: str, allow_probe: bool = True) -> str | None:
    """Why `device` cannot be a device id, or None. The envelope accepts the probe's reserved id
    `_probe`; configuration (allow_probe=False) does not, so no board can pose as the probe."""
    if device == PROBE_DEVICE and allow_probe:
        return None
    if DEVICE_PATTERN.fullmatch(device):
        return None
    if device == PROBE_DEVICE:
        return f"device id {PROBE_DEVICE!r} is reserved for the latency probe"
    return f"device id {device!r:.80} must match {DEVICE_PATTERN.pattern} in full"


def tag_key_problem(key: str) -> str | None:
    """Why `key` cannot be a configured tag key (`ingestion.tags`, `device_tags`), or None."""
    problem = _identifier_problem(key, "tag key")
    if problem is None and key in _WHY_RESERVED:
        problem = f"tag key {key!r} is reserved: {_WHY_RESERVED[key]}"
    return problem


def _text_problem(text: str, what: str) -> str | None:
    if not text:
        return f"{what} is empty (InfluxDB rejects an empty tag value)"
    for i, char in enumerate(text):
        if not char.isprintable():
            return f"{what} {text!r:.80} contains the non-printable character {char!r} at {i}"
        if char == "\\" and (i + 1 == len(text) or text[i + 1] in _LINE_PROTOCOL_ESCAPED):
            where = "at the end" if i + 1 == len(text) else f"before {text[i + 1]!r}"
            return f"{what} {text!r:.80} has a backslash {where}, which line protocol cannot carry"
    return None


def tag_value_problem(value: str) -> str | None:
    """Why `value` cannot be a configured tag value, or None. Any printable text (Python's
    `str.isprintable`: no control, format or separator characters apart from the space) except a
    backslash at the end or before `,`, `=` or a space."""
    return _text_problem(value, "tag value")


def measurement_problem(name: str) -> str | None:
    if name.startswith("_"):
        return f"measurement {name!r:.80} starts with '_', which InfluxDB 2 reserves"
    return _text_problem(name, "measurement")


def tag_field_collisions(tag_keys: Iterable[str], value_names: Iterable[str]) -> list[str]:
    """Names used both as a configured tag key and as a value name, sorted."""
    return sorted(set(tag_keys) & set(value_names))
