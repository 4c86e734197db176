"""Envelope → InfluxDB line protocol. Pure, so the mapping is tested without a database.

One point per envelope: tags identify the series (device, the device's thing in the model,
configured tags, plus origin=replay for a replayed reading: an envelope without `origin` gets no such
tag, so live series are unchanged); fields are the sensor values plus seq (integer) and boot
(string), the timestamp is the event time in ns. A re-delivered envelope produces the identical
point, which InfluxDB overwrites: at-least-once in, exactly-once stored.

The line is built here rather than with influxdb-client's Point (a profile put Point at a quarter
of the ingestion's CPU), and byte for byte as Point builds it: tags and fields sorted by key, floats
as `str()` without a trailing ".0". The measurement-and-tags prefix is computed once per device.
Field names need no escaping (the envelope allows only [A-Za-z][A-Za-z0-9_]*), nor does the boot id.

Names follow `twinpipe.names`: the mapper refuses a configuration whose names InfluxDB could not
store unchanged, and an envelope whose value name is one of its series' tag keys (a configured tag
such as `site`), which would hide the tag from every query; that envelope raises `Unstorable`.

A point's identity in InfluxDB is (measurement, tag set, timestamp). The tag set follows from the
device, so two envelopes of one device with the same `time_ns` are one point: the later write
replaces the fields of the earlier (InfluxDB "Duplicate points"), whatever their boot and seq.
"""

from __future__ import annotations

from collections.abc import Callable

from twinpipe.config.model import Location
from twinpipe.envelope import Envelope
from twinpipe.names import (
    DEVICE_TAG,
    ORIGIN_TAG,
    THING_TAG,
    measurement_problem,
    tag_key_problem,
    tag_value_problem,
)

_ESCAPE_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n", "\r": r"\r", "\t": r"\t"})
_ESCAPE_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\r": r"\r", "\t": r"\t"})
MAX_CACHED_DEVICES = 100_000


def _tag_value(value: str) -> str:
    escaped = value.translate(_ESCAPE_KEY)
    return escaped + " " if escaped.endswith("\\") else escaped


def _float(value: float) -> str:
    text = str(value)
    return text[:-2] if text.endswith(".0") else text


class Unstorable(ValueError):
    """An envelope that cannot be stored as it is; the message says why."""


def _name_problems(
    measurement: str, tags: dict[str, str], device_tags: dict[str, dict[str, str]]
) -> list[str]:
    problems = [measurement_problem(measurement)]
    for where, pairs in [("tags", tags), *((f"device_tags.{d}", t) for d, t in device_tags.items())]:
        for key, value in pairs.items():
            problems += [tag_key_problem(key), tag_value_problem(value)]
            problems[-2:] = [problem and f"{where}.{key}: {problem}" for problem in problems[-2:]]
    return [problem for problem in problems if problem]


def _string_field(value: str) -> str:
    """A line protocol string field value: quoted, with `\\` and `"` escaped; a control character
    (a newline would end the point) becomes a space."""
    value = "".join(char if char.isprintable() else " " for char in value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class PointMapper:
    """`thing_of(device)`: the key of the device's entry in `model.things`, or None (no `thing` tag);
    called once per device, the result is cached with the series prefix."""

    def __init__(
        self,
        measurement: str,
        tags: dict[str, str],
        device_tags: dict[str, dict[str, str]],
        thing_of: Callable[[str], str | None] = lambda device: None,
    ) -> None:
        problems = _name_problems(measurement, tags, device_tags)
        if problems:
            raise ValueError("; ".join(problems))
        self._measurement = measurement.translate(_ESCAPE_MEASUREMENT)
        self._tags = tags
        self._device_tags = device_tags
        self._thing_of = thing_of
        # (device, origin) → (line prefix, tag keys)
        self._series: dict[tuple[str, str | None], tuple[str, frozenset[str]]] = {}

    def _prefix(self, device: str, origin: str | None) -> tuple[str, frozenset[str]]:
        series = self._series.get((device, origin))
        if series is None:
            tags = {DEVICE_TAG: device} | self._tags | self._device_tags.get(device, {})
            thing = self._thing_of(device)
            if thing is not None:
                tags[THING_TAG] = thing
            if origin is not None:  # replayed readings only: live series keep their tag set
                tags[ORIGIN_TAG] = origin
            pairs = "".join(f",{k.translate(_ESCAPE_KEY)}={_tag_value(v)}" for k, v in sorted(tags.items()))
            series = (self._measurement + pairs + " ", frozenset(tags))
            if len(self._series) >= MAX_CACHED_DEVICES:
                self._series.clear()
            self._series[(device, origin)] = series
        return series

    def to_line(self, envelope: Envelope) -> str:
        prefix, tag_keys = self._prefix(envelope.device, envelope.origin)
        if not tag_keys.isdisjoint(envelope.values):
            both = sorted(tag_keys.intersection(envelope.values))
            raise Unstorable(
                f"value name(s) {both} are tag keys of this series; a field of the same name hides the tag"
            )
        fields = [(name, _float(value)) for name, value in envelope.values.items()]
        fields += [("boot", f'"{envelope.boot}"'), ("seq", f"{envelope.seq}i")]
        fields.sort()
        return f"{prefix}{','.join(f'{k}={v}' for k, v in fields)} {envelope.time_ns}"


def location_line(measurement: str, device: str, thing: str, location: Location, time_ns: int) -> str:
    """One point of `measurement` (e.g. `twin_location`) placing a device on the map: tags `device`
    and `thing`; fields `latitude` and `longitude` (degrees, WGS 84), `altitude` (m, only when the
    model sets it) and `name` (the location's name, a string)."""
    pairs = f",{DEVICE_TAG}={_tag_value(device)},{THING_TAG}={_tag_value(thing)}"
    fields = [
        ("latitude", _float(float(location.latitude))),
        ("longitude", _float(float(location.longitude))),
    ]
    if location.altitude is not None:
        fields.append(("altitude", _float(float(location.altitude))))
    fields.append(("name", _string_field(location.name)))
    fields.sort()
    body = ",".join(f"{k}={v}" for k, v in fields)
    return f"{measurement.translate(_ESCAPE_MEASUREMENT)}{pairs} {body} {time_ns}"


class LocationPoints:
    """When a modelled device's location point is due, and the point.

    `locate(device)` gives (thing key, location) or None (not modelled, or no location). A device's
    location is written for every `interval_s` window of event time in which it has a reading,
    stamped with the window's start (`time_ns - time_ns % interval`): the first reading of a run
    writes one, and a dashboard range of at least one interval that holds readings holds a location.
    The stamp depends only on the device and the reading's time, so a re-delivery, a restart or a
    second replica rewrites the identical point (InfluxDB overwrites it) instead of adding one. The
    windows written are remembered (bounded: forgotten in one go past 100,000), so the usual reading
    costs one dict lookup."""

    def __init__(
        self,
        measurement: str,
        interval_s: float,
        locate: Callable[[str], tuple[str, Location] | None],
    ) -> None:
        problem = measurement_problem(measurement)
        if problem:
            raise ValueError(problem)
        self._measurement = measurement
        self._interval_ns = int(interval_s * 1e9)
        self._locate = locate
        self._written: dict[tuple[str, int], None] = {}

    def due(self, device: str, time_ns: int) -> tuple[str, int] | None:
        """The location point to write with this reading and its time (ns), or None (written
        already, or no location)."""
        window = (device, time_ns - time_ns % self._interval_ns)
        if window in self._written:
            return None
        if len(self._written) >= MAX_CACHED_DEVICES:
            self._written.clear()
        self._written[window] = None
        placed = self._locate(device)
        if placed is None:
            return None
        thing, location = placed
        return location_line(self._measurement, device, thing, location, window[1]), window[1]


RECENT_POINTS = 50_000  # per generation; two generations are kept


class RecentPoints:
    """The (device, time_ns) of the last 50,000 to 100,000 points queued, with the (boot, seq) that
    wrote each, to see a point overwrite a *different* reading (a re-delivery writes the same boot and
    seq, which is the identical point and no loss). Two dict generations keep it bounded and cheap:
    one lookup and one insert per point. Overwrites further apart, or across a restart of the
    ingestion, are not seen."""

    def __init__(self, size: int = RECENT_POINTS) -> None:
        self._size = size
        self._current: dict[tuple[str, int], tuple[str, int]] = {}
        self._previous: dict[tuple[str, int], tuple[str, int]] = {}

    def overwrites(self, device: str, time_ns: int, boot: str, seq: int) -> bool:
        key = (device, time_ns)
        writer = (boot, seq)
        seen = self._current.setdefault(key, writer)  # one lookup for the usual new point
        if seen is writer:
            seen = self._previous.get(key)
            if len(self._current) >= self._size:
                self._previous, self._current = self._current, {}
        else:
            self._current[key] = writer
        return seen is not None and seen != writer
