"""`model:` — what the devices measure, after OGC SensorThings API 1.1 (OGC 18-088).

    model:
      observed_properties: {<id>: {name, definition, description, unit: {code, symbol, name}, range}}
      sensors:             {<id>: {name, description, metadata, encoding_type}}
      things:              {<id>: {devices, name, description, properties, location, sensor,
                                   datastreams: {<value name>: {observed_property, sensor, name,
                                                                description, unit, range}},
                                   settings: {<setting name>: {kind, unit, minimum, maximum, values,
                                                               description}}}}

A thing entry describes one device (`devices: nucleo-1`) or a fleet (`devices: "sim-*"`, a glob):
each matching device is one SensorThings Thing. A value a thing does not list is still a datastream
when its name is an observed property's id or ends with `_<id>` (`wall1_temperature` →
`temperature`): the observed property's unit and range are the defaults, so a fleet needs no
per-device entries. How a device and a value resolve is `twinpipe.model`'s job; this module is the
schema and its checks.

`settings` are what a user may set on a device through the twin (twin_state/README.md): a bool, a
number (in a UCUM unit, within [minimum, maximum]) or one of an enum's values. A setting's name must
not be a datastream's value name of the same thing: the device's `reported` state holds both its
latest readings and its settings under their names, so one would hide the other.

Units are UCUM codes (https://ucum.org/ucum), checked with `ucumvert`'s UCUM grammar (the maintained
Python UCUM parser, also used to convert UCUM to pint units): `Cel`, `%`, `hPa`, `ug/m3`, `dB`.
"""

from __future__ import annotations

import fnmatch
import math
import re
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from twinpipe.config.common import Section, ValueName, pattern_rule
from twinpipe.names import DEVICE_PATTERN, NAME_PATTERN

# Ids become URL path segments of the SensorThings API and InfluxDB tag values: keep them short ASCII.
ModelId = Annotated[str, pattern_rule(DEVICE_PATTERN, "an id (letters, digits, '.', '_', '-')")]
PropertyId = Annotated[str, pattern_rule(NAME_PATTERN, "an observed property id (letters, digits, '_')")]
_GLOB = re.compile(r"[A-Za-z0-9_.*?\[\]!-]{1,64}")


@lru_cache(maxsize=1)
def _ucum_parser() -> Any:
    from ucumvert import get_ucum_parser  # imports pint: only when a unit is checked

    return get_ucum_parser()


@lru_cache(maxsize=256)
def ucum_problem(code: str) -> str | None:
    """Why `code` is not a UCUM code (case-sensitive c/s form), or None."""
    if not code or code != code.strip():
        return "a UCUM code is a non-empty string without surrounding spaces"
    try:
        _ucum_parser().parse(code)
    except Exception as exc:  # lark's UnexpectedInput family; its text points at the character
        first = str(exc).strip().splitlines()[0]
        return f"{code!r} is not a UCUM code ({first}); e.g. Cel for °C, % for percent, hPa"
    return None


def _ucum(code: str) -> str:
    problem = ucum_problem(code)
    if problem:
        raise ValueError(problem)
    return code


def _uri(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*:\S+", value):
        raise ValueError("expected a URI such as https://qudt.org/vocab/quantitykind/Temperature")
    return value


def _glob(value: str) -> str:
    if not _GLOB.fullmatch(value):
        raise ValueError(
            "expected a device id or a glob of one ('*', '?', '[...]'): letters, digits, '.', '_', '-'"
        )
    return value


UcumCode = Annotated[str, AfterValidator(_ucum)]
Uri = Annotated[str, AfterValidator(_uri)]
Text = Annotated[str, Field(min_length=1, max_length=200)]


class Range(Section):
    """Plausible values of a datastream, in its unit: a reading outside is never stored."""

    min: float
    max: float

    @model_validator(mode="before")
    @classmethod
    def _from_pair(cls, data: Any) -> Any:
        if isinstance(data, list | tuple) and len(data) == 2:
            return {"min": data[0], "max": data[1]}
        return data

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not (math.isfinite(self.min) and math.isfinite(self.max)) or self.min > self.max:
            raise ValueError(f"expected [min, max] with finite min <= max, got [{self.min}, {self.max}]")
        return self

    def pair(self) -> tuple[float, float]:
        return (self.min, self.max)


class Unit(Section):
    """A SensorThings unitOfMeasurement: `code` (UCUM) defines it, `symbol` is what screens show."""

    code: UcumCode
    symbol: Annotated[str, Field(min_length=1, max_length=20)]
    name: Text | None = None  # default: the code

    def definition(self) -> str:
        return f"https://ucum.org/ucum#{self.code}"


class ObservedProperty(Section):
    name: Text
    definition: Uri
    description: str = ""
    unit: Unit
    range: Range | None = None


class Sensor(Section):
    name: Text
    description: str = ""
    metadata: Uri  # the datasheet or a description of the procedure
    encoding_type: str | None = None  # default from metadata: application/pdf for .pdf, else text/html

    def encoding(self) -> str:
        if self.encoding_type:
            return self.encoding_type
        return "application/pdf" if self.metadata.lower().endswith(".pdf") else "text/html"


class Location(Section):
    """Where a thing is, as WGS 84 coordinates (EPSG:4326): latitude/longitude in degrees, altitude in m."""

    name: Text
    description: str = ""
    latitude: Annotated[float, Field(ge=-90, le=90)]
    longitude: Annotated[float, Field(ge=-180, le=180)]
    altitude: float | None = None

    @model_validator(mode="after")
    def _finite(self) -> Location:
        if self.altitude is not None and not math.isfinite(self.altitude):
            raise ValueError("altitude must be a finite number of metres")
        return self


class Datastream(Section):
    observed_property: PropertyId
    sensor: ModelId | None = None  # default: the thing's sensor
    name: Text | None = None  # default: from the value name
    description: str = ""
    unit: Unit | None = None  # default: the observed property's unit
    range: Range | None = None  # default: the observed property's range


SETTING_KINDS = ("bool", "number", "enum")


class Setting(Section):
    """Something a user may set on a device: `kind` bool, number (`unit` UCUM, `minimum`/`maximum`
    inclusive, both optional) or enum (`values`, the allowed strings)."""

    kind: Literal["bool", "number", "enum"]
    unit: UcumCode | None = None
    minimum: float | None = None
    maximum: float | None = None
    values: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = None
    description: str = ""

    @model_validator(mode="after")
    def _fits_kind(self) -> Setting:
        number_keys = [k for k in ("unit", "minimum", "maximum") if getattr(self, k) is not None]
        if self.kind != "number" and number_keys:
            raise ValueError(f"{', '.join(number_keys)}: only for kind number, not {self.kind}")
        if self.kind != "enum" and self.values is not None:
            raise ValueError(f"values: only for kind enum, not {self.kind}")
        if self.kind == "enum" and not self.values:
            raise ValueError("values: kind enum needs the list of allowed values")
        for key in ("minimum", "maximum"):
            bound = getattr(self, key)
            if bound is not None and not math.isfinite(bound):
                raise ValueError(f"{key}: must be a finite number, not {bound}")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"minimum ({self.minimum}) must not exceed maximum ({self.maximum})")
        return self

    def problem(self, value: Any) -> str | None:
        """Why `value` (as decoded from JSON) cannot be set, or None: wrong kind, out of range, not
        one of the enum's values."""
        if self.kind == "bool":
            return None if isinstance(value, bool) else f"expected true or false, got {value!r}"
        if self.kind == "enum":
            allowed = self.values or []
            return (
                None
                if isinstance(value, str) and value in allowed
                else f"expected one of {allowed}, got {value!r}"
            )
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return f"expected a finite number, got {value!r}"
        unit = f" {self.unit}" if self.unit else ""
        if self.minimum is not None and value < self.minimum:
            return f"{value}{unit} is below the minimum {self.minimum}{unit}"
        if self.maximum is not None and value > self.maximum:
            return f"{value}{unit} is above the maximum {self.maximum}{unit}"
        return None


class Thing(Section):
    devices: Annotated[str, AfterValidator(_glob)]
    name: Text  # may contain {device}
    description: str = ""
    properties: dict[str, Any] = Field(default_factory=dict)
    location: Location | None = None
    sensor: ModelId | None = None
    datastreams: dict[ValueName, Datastream] = Field(default_factory=dict)
    settings: dict[ValueName, Setting] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _placeholders(cls, value: str) -> str:
        names = set(re.findall(r"\{([^}]*)\}", value))
        if names - {"device"}:
            raise ValueError("only the placeholder {device} is allowed")
        return value

    def matches(self, device: str) -> bool:
        return fnmatch.fnmatchcase(device, self.devices)

    def is_pattern(self) -> bool:
        return any(c in self.devices for c in "*?[")


class ModelConfig(Section):
    """Each of the three maps replaces the shipped one (DEFAULT_MODEL) when given."""

    observed_properties: dict[PropertyId, ObservedProperty] = Field(
        default_factory=lambda: _default("observed_properties")
    )
    sensors: dict[ModelId, Sensor] = Field(default_factory=lambda: _default("sensors"))
    things: dict[ModelId, Thing] = Field(default_factory=lambda: _default("things"))

    @model_validator(mode="after")
    def _references(self) -> ModelConfig:
        errors = []
        for thing_id, thing in self.things.items():
            if thing.sensor is not None and thing.sensor not in self.sensors:
                errors.append(f"things.{thing_id}.sensor: {thing.sensor!r} is not in model.sensors")
            for value, stream in thing.datastreams.items():
                where = f"things.{thing_id}.datastreams.{value}"
                if stream.observed_property not in self.observed_properties:
                    errors.append(
                        f"{where}.observed_property: {stream.observed_property!r} is not in "
                        f"model.observed_properties {sorted(self.observed_properties)}"
                    )
                if stream.sensor is not None and stream.sensor not in self.sensors:
                    errors.append(f"{where}.sensor: {stream.sensor!r} is not in model.sensors")
            for name in thing.settings:
                clash = self._datastream_named(thing, name)
                if clash:
                    errors.append(
                        f"things.{thing_id}.settings.{name}: {clash}; the device's reported state holds"
                        " its readings and its settings by name, so one would hide the other: rename"
                        " the setting"
                    )
        if errors:
            raise ValueError("; ".join(errors))
        return self

    def _datastream_named(self, thing: Thing, name: str) -> str | None:
        """Why `name` is (or would be read as) a datastream of `thing`, or None."""
        if name in thing.datastreams:
            return f"{name!r} is also a datastream of this thing"
        for pid in self.observed_properties:
            if name == pid or name.endswith("_" + pid):
                return f"{name!r} would be read as a datastream of observed property {pid!r}"
        return None


def _default(key: str) -> Any:
    return getattr(_default_model(), key)


@lru_cache(maxsize=1)
def _default_model() -> ModelConfig:
    return ModelConfig.model_validate(DEFAULT_MODEL)


# The shipped model (config.yaml shows the same): the Nucleo board, the simulator's boards and the two
# weather stations whose recorded year ships in recordings/ (pvlib's TMY3 files). Definitions are
# QUDT quantity kinds (https://qudt.org/vocab/quantitykind/).
_QUDT = "https://qudt.org/vocab/quantitykind/"
# What the Nucleo firmware and the simulated boards accept as commands (publisher.commands).
_BOARD_SETTINGS = {
    "heater": {"kind": "bool", "description": "The board's heater: on warms the enclosure"},
    "report_interval_s": {
        "kind": "number",
        "unit": "s",
        "minimum": 0.1,
        "maximum": 3600.0,
        "description": "Time between two readings the board reports",
    },
}
# The values the TMY3 recordings carry: one datastream each, named after its observed property.
# Declared, so the model's other observed properties (air quality, noise) are no datastreams of the
# stations. (The simulated boards' values follow publisher.simulator.sensors, so that thing declares
# none: its datastreams are the values its devices send.)
_WEATHER_DATASTREAMS = {
    value: {"observed_property": value} for value in ("temperature", "humidity", "pressure")
}
_LAB = {"name": "Lab (example: set where your board is)", "latitude": 48.1497, "longitude": 11.5679}
DEFAULT_MODEL: dict[str, Any] = {
    "observed_properties": {
        "temperature": {
            "name": "Temperature",
            "definition": _QUDT + "Temperature",
            "description": "Air or surface temperature",
            "unit": {"code": "Cel", "symbol": "°C", "name": "degree Celsius"},
            "range": [-40.0, 125.0],
        },
        "humidity": {
            "name": "Relative humidity",
            "definition": _QUDT + "RelativeHumidity",
            "description": "Relative humidity of the air",
            "unit": {"code": "%", "symbol": "%", "name": "percent"},
            "range": [0.0, 100.0],
        },
        "pressure": {
            "name": "Atmospheric pressure",
            "definition": _QUDT + "AtmosphericPressure",
            "description": "Barometric air pressure",
            "unit": {"code": "hPa", "symbol": "hPa", "name": "hectopascal"},
            "range": [300.0, 1100.0],
        },
        # The municipal quantities of a city's environmental sensor network (air quality, noise).
        "pm2_5": {
            "name": "PM2.5 mass concentration",
            "definition": _QUDT + "MassConcentration",
            "description": "Mass concentration of particulate matter up to 2.5 µm (PM2.5)",
            "unit": {"code": "ug/m3", "symbol": "µg/m³", "name": "microgram per cubic metre"},
            "range": [0.0, 1000.0],
        },
        "pm10": {
            "name": "PM10 mass concentration",
            "definition": _QUDT + "MassConcentration",
            "description": "Mass concentration of particulate matter up to 10 µm (PM10)",
            "unit": {"code": "ug/m3", "symbol": "µg/m³", "name": "microgram per cubic metre"},
            "range": [0.0, 2000.0],
        },
        "noise": {
            "name": "Sound pressure level",
            "definition": _QUDT + "SoundPressureLevel",
            "description": "A-weighted equivalent sound pressure level",
            "unit": {"code": "dB", "symbol": "dB", "name": "decibel"},
            "range": [0.0, 140.0],
        },
    },
    "sensors": {
        "nucleo-sensors": {
            "name": "Nucleo temperature/humidity sensors",
            "description": "Temperature and humidity sensors wired to an STM32 Nucleo board",
            "metadata": "https://www.st.com/en/evaluation-tools/stm32-nucleo-boards.html",
        },
        "simulated": {
            "name": "twinpipe simulator",
            "description": "Gaussian noise around a drifting mean, rare outliers (publisher/simulator.py)",
            "metadata": "https://github.com/twinpipe/twinpipe/blob/main/publisher/README.md",
        },
        "tmy3-station": {
            "name": "NSRDB TMY3 weather station",
            "description": "Typical meteorological year of a US weather station (NREL), as shipped by pvlib",
            "metadata": "https://www.nrel.gov/docs/fy08osti/43156.pdf",
        },
    },
    "things": {
        "nucleo": {
            "devices": "nucleo-1",
            "name": "Nucleo board",
            "description": "STM32 Nucleo board: ambient and wall temperature and humidity over USB serial",
            "location": _LAB,
            "sensor": "nucleo-sensors",
            "datastreams": {
                "ambient_temperature": {"observed_property": "temperature", "name": "Ambient temperature"},
                "ambient_humidity": {"observed_property": "humidity", "name": "Ambient humidity"},
                "wall1_temperature": {"observed_property": "temperature", "name": "Wall 1 temperature"},
                "wall1_humidity": {"observed_property": "humidity", "name": "Wall 1 humidity"},
                "wall2_temperature": {"observed_property": "temperature", "name": "Wall 2 temperature"},
                "wall2_humidity": {"observed_property": "humidity", "name": "Wall 2 humidity"},
            },
            "settings": _BOARD_SETTINGS,
        },
        "simulated": {
            "devices": "sim-*",
            "name": "Simulated board {device}",
            "description": "A board simulated by the publisher (publisher.source: simulator)",
            "location": {**_LAB, "name": "Simulated lab", "latitude": 48.1500, "longitude": 11.5690},
            "sensor": "simulated",
            "settings": _BOARD_SETTINGS,
        },
        "greensboro": {
            "devices": "greensboro",
            "name": "Greensboro Piedmont Triad International",
            "description": "TMY3 station 723170, North Carolina (recordings/greensboro-tmy3.csv)",
            "properties": {"wmo_station": "723170", "utc_offset_h": -5},
            "location": {"name": "Greensboro, NC", "latitude": 36.1, "longitude": -79.95, "altitude": 273.0},
            "sensor": "tmy3-station",
            "datastreams": _WEATHER_DATASTREAMS,
        },
        "sand-point": {
            "devices": "sand-point",
            "name": "Sand Point",
            "description": "TMY3 station 703165, Alaska (recordings/sand-point-tmy3.csv)",
            "properties": {"wmo_station": "703165", "utc_offset_h": -9},
            "location": {
                "name": "Sand Point, AK",
                "latitude": 55.317,
                "longitude": -160.517,
                "altitude": 7.0,
            },
            "sensor": "tmy3-station",
            "datastreams": _WEATHER_DATASTREAMS,
        },
    },
}
