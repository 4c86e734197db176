"""The twin's model resolved for one device and value: which Thing, which Datastream, what unit and range.

Resolution rules (config: `model:`, schema in `twinpipe.config.model`):

* A device belongs to the first thing entry whose `devices` is exactly its id; failing that, to the
  first entry (in file order) whose glob matches it; failing that, to none (its values are stored as
  before, without a thing).
* A value of that device is a datastream when the entry lists it, or when its name is an observed
  property's id or ends with `_<id>` (the longest such id wins): `wall1_temperature` → `temperature`.
* A datastream's unit and range are its own, else its observed property's; its sensor is its own,
  else the thing's.

SensorThings ids (OGC 18-088 §8.2): a Thing's and a Location's `@iot.id` is the device id (one Thing
per device), a Datastream's is `<device>:<value>` (':' occurs in neither), an ObservedProperty's and a
Sensor's their key in config.yaml. Pure: no I/O; cached per device because the publisher and the
ingestion look devices up for every reading.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from twinpipe.config.model import Datastream, Location, ModelConfig, ObservedProperty, Sensor, Setting, Unit

# UCUM code → Grafana unit id (grafana/packages/grafana-data/src/valueFormats/categories.ts); any
# other code is shown with its symbol as a suffix ("suffix:<symbol>"), which Grafana renders as is.
GRAFANA_UNITS = {
    "Cel": "celsius",
    "[degF]": "fahrenheit",
    "K": "kelvin",
    "%": "percent",
    "hPa": "pressurehpa",
    "kPa": "pressurekpa",
    "Pa": "pressurepa",
    "mbar": "pressurembar",
    "bar": "pressurebar",
    "[psi]": "pressurepsi",
    "m/s": "velocityms",
    "km/h": "velocitykmh",
    "ug/m3": "conμgm3",
    "mg/m3": "conmgm3",
    "[ppm]": "ppm",
    "[ppb]": "conppb",
    "dB": "dB",
    "lx": "lux",
    "W/m2": "Wm2",
    "W": "watt",
    "V": "volt",
    "A": "amp",
    "m": "lengthm",
    "s": "s",
    "ms": "ms",
}


def grafana_unit(unit: Unit) -> str:
    """The Grafana unit id for a UCUM unit: a known id, else `suffix:<symbol>`."""
    return GRAFANA_UNITS.get(unit.code, f"suffix:{unit.symbol}")


@dataclass(frozen=True, slots=True)
class ResolvedDatastream:
    id: str  # "<device>:<value>"
    device: str
    value: str  # the value name in envelopes, the field key in InfluxDB
    name: str
    description: str
    observed_property_id: str
    observed_property: ObservedProperty
    unit: Unit
    range: tuple[float, float] | None
    sensor_id: str | None
    sensor: Sensor | None


@dataclass(frozen=True, slots=True)
class ResolvedThing:
    id: str  # the device id
    entry: str  # the key of its entry in model.things (stored as the `thing` tag)
    name: str
    description: str
    properties: dict[str, Any] = field(hash=False)
    location: Location | None
    declared: tuple[str, ...]  # value names the entry lists explicitly


def humanise(value: str) -> str:
    """A display name from a value name: `wall1_temperature` → `Wall1 temperature`."""
    return value.replace("_", " ").capitalize()


def stream_defaults(
    value: str, declared: Datastream | None, prop: ObservedProperty
) -> tuple[str, Unit, tuple[float, float] | None]:
    """A datastream's name, unit and plausible [min, max]: what it declares, else derived (the name
    from the value name; the observed property's unit, and its range only when the datastream keeps
    that unit, since the range is in the property's unit: °F under a °C property has none)."""
    name = declared.name if declared and declared.name else humanise(value)
    unit = (declared.unit if declared else None) or prop.unit
    value_range = (
        declared.range if declared and declared.range else (prop.range if unit == prop.unit else None)
    )
    return name, unit, value_range.pair() if value_range else None


class TwinModel:
    """`model:` of config.yaml, resolved per device and value."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        # Longest id first, so `dew_point_temperature` is not taken for `temperature` by accident.
        self._property_ids = sorted(config.observed_properties, key=len, reverse=True)
        self.thing = lru_cache(maxsize=65536)(self._thing)
        self.datastream = lru_cache(maxsize=65536)(self._datastream)

    def _entry(self, device: str) -> str | None:
        things = self.config.things
        for key, entry in things.items():
            if entry.devices == device:
                return key
        return next((key for key, entry in things.items() if entry.matches(device)), None)

    def _thing(self, device: str) -> ResolvedThing | None:
        key = self._entry(device)
        if key is None:
            return None
        entry = self.config.things[key]
        return ResolvedThing(
            id=device,
            entry=key,
            name=entry.name.replace("{device}", device),
            description=entry.description,
            properties=entry.properties,
            location=entry.location,
            declared=tuple(entry.datastreams),
        )

    def property_of(self, value: str) -> str | None:
        """The observed property a value name implies: its id, or the longest id it ends with after '_'."""
        for pid in self._property_ids:
            if value == pid or value.endswith("_" + pid):
                return pid
        return None

    def _datastream(self, device: str, value: str) -> ResolvedDatastream | None:
        thing = self.thing(device)
        if thing is None:
            return None
        entry = self.config.things[thing.entry]
        declared = entry.datastreams.get(value)
        pid = declared.observed_property if declared else self.property_of(value)
        if pid is None:
            return None
        prop = self.config.observed_properties[pid]
        sensor_id = (declared.sensor if declared else None) or entry.sensor
        name, unit, value_range = stream_defaults(value, declared, prop)
        return ResolvedDatastream(
            id=f"{device}:{value}",
            device=device,
            value=value,
            name=name,
            description=(declared.description if declared else "") or prop.description,
            observed_property_id=pid,
            observed_property=prop,
            unit=unit,
            range=value_range,
            sensor_id=sensor_id,
            sensor=self.config.sensors.get(sensor_id) if sensor_id else None,
        )

    def settings(self, device: str) -> dict[str, Setting]:
        """What a user may set on `device` (its thing's `settings`); empty for a device of no thing."""
        thing = self.thing(device)
        return dict(self.config.things[thing.entry].settings) if thing else {}

    def settings_problems(self, device: str, settings: dict[str, object]) -> dict[str, str]:
        """Why each of `settings` (name → value as decoded from JSON) cannot be set on `device`, by
        setting name; empty when all can. An unknown name's reason lists the known ones."""
        known = self.settings(device)
        problems = {}
        for name, value in settings.items():
            setting = known.get(name)
            if setting is None:
                problems[name] = f"{device!r} has no setting {name!r} (it has {sorted(known)})"
            elif (problem := setting.problem(value)) is not None:
                problems[name] = problem
        return problems

    def outside_ranges(self, device: str, values: Mapping[str, float]) -> list[str]:
        """The names, in order, of the values outside their datastream's plausible [min, max]."""
        outside = []
        for name, value in values.items():
            stream = self.datastream(device, name)
            if (
                stream is not None
                and stream.range is not None
                and not stream.range[0] <= value <= stream.range[1]
            ):
                outside.append(name)
        return outside

    def range_problem(self, device: str, values: Mapping[str, float]) -> str | None:
        """Why `values` of `device` cannot be stored, e.g. `temperature = 999.0 outside [-40.0, 125.0]`
        (each value outside its datastream's range, joined by "; "), or None when all are in range."""
        outside = self.outside_ranges(device, values)
        if not outside:
            return None
        ranges = self.ranges(device, outside)
        return "; ".join(f"{name} = {values[name]!r} outside {list(ranges[name])}" for name in outside)

    def ranges(self, device: str, values: list[str]) -> dict[str, tuple[float, float]]:
        """Plausible [min, max] per value name of `device`, for the values that have one."""
        found = {}
        for value in values:
            stream = self.datastream(device, value)
            if stream is not None and stream.range is not None:
                found[value] = stream.range
        return found
