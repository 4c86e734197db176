"""The model section (config.yaml `model:`) and its resolution per device and value (twinpipe.model)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twinpipe.config import Config, ConfigError, ModelConfig, parse_config
from twinpipe.config.model import DEFAULT_MODEL, ucum_problem
from twinpipe.model import GRAFANA_UNITS, TwinModel, grafana_unit
from twinpipe.names import DEVICE_PATTERN, NAME_PATTERN

SHIPPED = TwinModel(ModelConfig())


def model_with(**changes: Any) -> dict[str, Any]:
    """The shipped model with some of its entries replaced (deep copies of the parts changed)."""
    document = {key: dict(value) for key, value in DEFAULT_MODEL.items()}
    for path, value in changes.items():
        section, key = path.split("__")
        document[section][key] = value
    return document


def errors_of(model: dict[str, Any], **rest: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config({"model": model, **rest}, {})
    return str(caught.value)


def test_the_shipped_model_describes_the_nucleo_board_and_the_simulator() -> None:
    nucleo = SHIPPED.thing("nucleo-1")
    assert nucleo is not None and nucleo.entry == "nucleo" and nucleo.location is not None
    wall = SHIPPED.datastream("nucleo-1", "wall1_temperature")
    assert wall is not None
    assert (wall.name, wall.unit.code, wall.unit.symbol, wall.range) == (
        "Wall 1 temperature",
        "Cel",
        "°C",
        (-40, 125),
    )
    assert SHIPPED.datastream("nucleo-1", "ambient_humidity").unit.code == "%"  # type: ignore[union-attr]
    for value in Config().publisher.simulator.sensors:
        stream = SHIPPED.datastream("sim-7", value)
        assert stream is not None and stream.sensor_id == "simulated", value
    assert SHIPPED.thing("sim-7").name == "Simulated board sim-7"  # type: ignore[union-attr]


def test_an_exact_device_wins_over_an_earlier_glob_and_unknown_devices_have_no_thing() -> None:
    things = {
        "fleet": {"devices": "board-*", "name": "Fleet {device}"},
        "special": {"devices": "board-7", "name": "The special one"},
    }
    model = TwinModel(ModelConfig.model_validate(model_with(things__=None) | {"things": things}))
    assert model.thing("board-7").entry == "special"  # type: ignore[union-attr]
    assert model.thing("board-8").entry == "fleet"  # type: ignore[union-attr]
    assert model.thing("nucleo-1") is None
    assert model.datastream("nucleo-1", "temperature") is None


def test_values_resolve_by_observed_property_suffix_and_the_longest_id_wins() -> None:
    properties = dict(DEFAULT_MODEL["observed_properties"])
    properties["dew_point_temperature"] = {
        "name": "Dew point",
        "definition": "https://qudt.org/vocab/quantitykind/DewPointTemperature",
        "unit": {"code": "Cel", "symbol": "°C"},
    }
    model = TwinModel(ModelConfig.model_validate({**DEFAULT_MODEL, "observed_properties": properties}))
    assert model.property_of("outdoor_dew_point_temperature") == "dew_point_temperature"
    assert model.property_of("outdoor_temperature") == "temperature"
    assert model.property_of("temperatures") is None  # a suffix after '_' only, not any ending
    assert model.property_of("xtemperature") is None
    assert model.datastream("sim-1", "co2") is None  # no observed property: stored, but not modelled


def test_a_declared_range_and_unit_override_the_observed_property() -> None:
    things = {
        "oven": {
            "devices": "oven-1",
            "name": "Oven",
            "datastreams": {
                "core_temperature": {
                    "observed_property": "temperature",
                    "range": [0, 300],
                    "unit": {"code": "[degF]", "symbol": "°F"},
                }
            },
        }
    }
    model = TwinModel(ModelConfig.model_validate({**DEFAULT_MODEL, "things": things}))
    stream = model.datastream("oven-1", "core_temperature")
    assert stream is not None and stream.range == (0, 300) and stream.unit.code == "[degF]"
    assert grafana_unit(stream.unit) == "fahrenheit"
    assert model.ranges("oven-1", ["core_temperature", "humidity", "co2"]) == {
        "core_temperature": (0, 300),
        "humidity": (0, 100),
    }


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            model_with(
                observed_properties__temperature={
                    "name": "T",
                    "definition": "https://x.org/T",
                    "unit": {"code": "degC", "symbol": "°C"},
                }
            ),
            "model.observed_properties.temperature.unit.code: 'degC' is not a UCUM code",
        ),
        (
            model_with(
                things__nucleo={
                    "devices": "nucleo-1",
                    "name": "N",
                    "location": {"name": "x", "latitude": 91, "longitude": 0},
                }
            ),
            "model.things.nucleo.location.latitude: Input should be less than or equal to 90",
        ),
        (
            model_with(
                things__nucleo={
                    "devices": "nucleo-1",
                    "name": "N",
                    "location": {"name": "x", "latitude": 0, "longitude": -181},
                }
            ),
            "model.things.nucleo.location.longitude: Input should be greater than or equal to -180",
        ),
        (
            model_with(
                things__nucleo={
                    "devices": "nucleo-1",
                    "name": "N",
                    "datastreams": {"co2": {"observed_property": "temperature"}},
                }
            ),
            "model.things.nucleo.datastreams.co2: 'nucleo-1' never produces 'co2'",
        ),
        (
            model_with(
                things__simulated={
                    "devices": "sim-*",
                    "name": "S",
                    "datastreams": {"wall1_temperature": {"observed_property": "temperature"}},
                }
            ),
            "simulated.datastreams.wall1_temperature: 'sim-*' never produces 'wall1_temperature'",
        ),
        (
            model_with(
                things__nucleo={
                    "devices": "nucleo-1",
                    "name": "N",
                    "datastreams": {"seq": {"observed_property": "temperature"}},
                }
            ),
            "value name 'seq' is reserved",
        ),
        (
            model_with(
                things__nucleo={
                    "devices": "nucleo-1",
                    "name": "N",
                    "datastreams": {"ambient_temperature": {"observed_property": "heat"}},
                }
            ),
            "ambient_temperature.observed_property: 'heat' is not in model.observed_properties",
        ),
        (
            model_with(things__nucleo={"devices": "nucleo-1", "name": "N", "sensor": "dht22"}),
            "things.nucleo.sensor: 'dht22' is not in model.sensors",
        ),
        (
            model_with(things__nucleo={"devices": "nucleo 1", "name": "N"}),
            "model.things.nucleo.devices: expected a device id or a glob",
        ),
        (
            model_with(things__nucleo={"devices": "nucleo-1", "name": "N {board}"}),
            "model.things.nucleo.name: only the placeholder {device} is allowed",
        ),
        (
            model_with(
                observed_properties__humidity={
                    "name": "H",
                    "definition": "humidity",
                    "unit": {"code": "%", "symbol": "%"},
                }
            ),
            "model.observed_properties.humidity.definition: expected a URI",
        ),
        (
            model_with(
                observed_properties__humidity={
                    "name": "H",
                    "definition": "https://x.org/H",
                    "unit": {"code": "%", "symbol": "%"},
                    "range": [100, 0],
                }
            ),
            "model.observed_properties.humidity.range: expected [min, max] with finite min <= max",
        ),
    ],
)
def test_model_errors_name_the_key(model: dict[str, Any], message: str) -> None:
    assert message in errors_of(model)


def test_a_datastream_is_checked_against_the_fields_of_the_configured_board() -> None:
    board = {"serial": {"device_id": "lab-3", "frame": {"format": "csv", "fields": ["t", "co2"]}}}
    things = {
        "lab": {"devices": "lab-3", "name": "Lab", "datastreams": {"t": {"observed_property": "temperature"}}}
    }
    assert (
        parse_config({"publisher": board, "model": {"things": things}}, {}).model.things["lab"].devices
        == "lab-3"
    )
    things["lab"]["datastreams"]["rh"] = {"observed_property": "humidity"}
    assert "model.things.lab.datastreams.rh: 'lab-3' never produces 'rh'" in errors_of(
        {"things": things}, publisher=board
    )


@pytest.mark.parametrize(
    "code", ["Cel", "%", "hPa", "ug/m3", "[ppm]", "dB", "m/s", "W/m2", "K", "[degF]", "1"]
)
def test_ucum_codes_in_use_pass(code: str) -> None:
    assert ucum_problem(code) is None


@pytest.mark.parametrize("code", ["degC", "°C", "celsius", "", " Cel", "percent", "kg//m"])
def test_non_ucum_units_are_refused(code: str) -> None:
    assert ucum_problem(code) is not None


def test_every_grafana_unit_in_the_map_is_a_ucum_code() -> None:
    assert [code for code in GRAFANA_UNITS if ucum_problem(code)] == []


@given(st.from_regex(DEVICE_PATTERN, fullmatch=True), st.from_regex(NAME_PATTERN, fullmatch=True))
def test_any_device_and_value_resolve_consistently(device: str, value: str) -> None:
    """Resolution never fails; a datastream exists exactly when the device has a thing and the value
    names an observed property, and its id, unit and range are the observed property's."""
    stream = SHIPPED.datastream(device, value)
    thing = SHIPPED.thing(device)
    prop = SHIPPED.property_of(value)
    declared = thing is not None and value in thing.declared
    assert (stream is not None) == (thing is not None and (declared or prop is not None))
    if stream is not None and not declared:
        assert stream.id == f"{device}:{value}" and ":" not in device + value
        assert stream.observed_property_id == prop
        expected = ModelConfig().observed_properties[prop].range  # type: ignore[index]
        assert stream.range == (expected.pair() if expected else None)


def test_a_datastream_in_another_unit_does_not_inherit_the_property_range() -> None:
    """The observed property's range is in its own unit: 130 °F (54 °C) must not be dropped."""
    things = {
        "oven": {
            "devices": "oven-1",
            "name": "Oven",
            "datastreams": {
                "core_temperature": {
                    "observed_property": "temperature",
                    "unit": {"code": "[degF]", "symbol": "°F"},
                }
            },
        }
    }
    model = TwinModel(ModelConfig.model_validate({**DEFAULT_MODEL, "things": things}))
    assert model.datastream("oven-1", "core_temperature").range is None  # type: ignore[union-attr]
