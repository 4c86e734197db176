"""The model in storage, without servers: the `thing` tag, location points, the reserved name `thing`,
and the Digital twin dashboard generated from the model (and shipped equal to it)."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from influx_ingestion.ingestion import Batch, Ingestion
from influx_ingestion.points import LocationPoints, PointMapper, location_line
from twinpipe.__main__ import main, write_replacing
from twinpipe.config import ConfigError, load_config, parse_config
from twinpipe.config.model import Location
from twinpipe.dashboard import OUTPUT, ROOT, digital_twin, render, state_stream, streams, title
from twinpipe.envelope import Envelope, encode
from twinpipe.metrics import sample
from twinpipe.model import TwinModel, grafana_unit
from twinpipe.names import tag_key_problem, value_name_problem

SHIPPED = str(ROOT / "config.yaml")
NOW_NS = 1_764_460_800_000_000_000  # 2025-11-30T00:00:00Z
MINUTE_NS = 60 * 10**9
LAB = Location(name='Lab "A", room 1', latitude=48.1497, longitude=11.5679)


def record(payload: bytes, offset: int = 0, timestamp_ms: int = NOW_NS // 10**6) -> SimpleNamespace:
    return SimpleNamespace(
        topic="t", partition=0, offset=offset, key=None, value=payload, timestamp=timestamp_ms
    )


def reading(device: str, time_ns: int, seq: int = 0, **values: float) -> bytes:
    return encode(Envelope(device, "b1", seq, time_ns, values or {"temperature": 20.0}))


def ingestion(settings: dict | None = None) -> Ingestion:
    config = parse_config({"ingestion": settings or {}}, {})  # the shipped model (DEFAULT_MODEL)
    return Ingestion(config, consumer=None, write=lambda lines: None, dead_letters=None)  # type: ignore[arg-type]


# --- names ---


def test_thing_is_reserved_as_value_name_and_tag_key_with_the_reason() -> None:
    assert "thing" in (value_name_problem("thing") or "") and "model.things" in value_name_problem("thing")
    assert "reserved" in (tag_key_problem("thing") or "")
    assert value_name_problem("things") is None and value_name_problem("Thing") is None


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"ingestion": {"tags": {"thing": "x"}}}, "ingestion.tags.thing.[key]: expected a tag key: tag key"),
        (
            {"ingestion": {"device_tags": {"d1": {"thing": "x"}}}},
            "ingestion.device_tags.d1.thing.[key]: expected a tag key",
        ),
        (
            {"publisher": {"simulator": {"sensors": {"thing": {"mean": 1, "stddev": 1, "drift": 0}}}}},
            "publisher.simulator.sensors.thing.[key]: expected a value name: value name 'thing' is reserved",
        ),
        (
            {"ingestion": {"measurement": "twin_location"}},
            "location_measurement: 'twin_location' is also ingestion.measurement",
        ),
    ],
)
def test_config_refuses_thing_as_a_name_and_a_shared_location_measurement(
    document: dict, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(document, {})
    assert any(expected in error for error in caught.value.errors), caught.value.errors


def test_an_envelope_with_a_value_named_thing_is_dead_lettered() -> None:
    stage = ingestion()
    batch = Batch()
    stage.accumulate(batch, record(reading("d1", NOW_NS, thing=1.0)))
    assert not batch.lines and "value name 'thing' is reserved" in batch.dead_letters[0].reason


# --- the thing tag ---


def test_points_of_a_modelled_device_carry_its_thing_and_others_none() -> None:
    model = TwinModel(parse_config({}, {}).model)
    mapper = PointMapper(
        "telemetry", {"site": "lab"}, {}, lambda d: t.entry if (t := model.thing(d)) else None
    )
    sim = mapper.to_line(Envelope("sim-3", "b", 1, NOW_NS, {"temperature": 21.5}))
    nucleo = mapper.to_line(Envelope("nucleo-1", "b", 1, NOW_NS, {"ambient_temperature": 21.5}))
    loner = mapper.to_line(Envelope("bench-7", "b", 1, NOW_NS, {"temperature": 21.5}))
    assert sim.startswith("telemetry,device=sim-3,site=lab,thing=simulated boot=")
    assert nucleo.startswith("telemetry,device=nucleo-1,site=lab,thing=nucleo ")
    assert loner.startswith("telemetry,device=bench-7,site=lab ") and "thing" not in loner


devices = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)


@given(devices, st.sampled_from(["simulated", "nucleo", "a.b-c_9"]) | st.none())
def test_the_thing_tag_is_exactly_the_entry_and_the_series_prefix_otherwise_unchanged(
    device: str, thing: str | None
) -> None:
    envelope = Envelope(device, "b", 1, NOW_NS, {"temperature": 1.0})
    plain = PointMapper("telemetry", {}, {}).to_line(envelope)
    tagged = PointMapper("telemetry", {}, {}, lambda d: thing).to_line(envelope)
    if thing is None:
        assert tagged == plain
    else:
        prefix, rest = plain.split(" ", 1)
        assert tagged == f"{prefix},thing={thing} {rest}"


def test_the_probe_gets_no_thing_even_from_a_catch_all_glob() -> None:
    things = {
        "all": {
            "devices": "*",
            "name": "Any {device}",
            "location": {"name": "x", "latitude": 1, "longitude": 2},
        }
    }
    config = parse_config({"model": {"things": things}}, {})
    stage = Ingestion(config, consumer=None, write=lambda lines: None, dead_letters=None)  # type: ignore[arg-type]
    batch = Batch()
    stage.accumulate(batch, record(reading("_probe", NOW_NS, probe=1.0)))
    stage.accumulate(batch, record(reading("any-1", NOW_NS)))
    assert "thing" not in batch.lines[0] and ",thing=all " in batch.lines[1]
    assert len(batch.locations) == 1 and batch.locations[0].startswith(
        "twin_location,device=any-1,thing=all "
    )


# --- location points ---


def test_location_line_has_numeric_coordinates_a_string_name_and_altitude_only_when_set() -> None:
    line = location_line("twin_location", "nucleo-1", "nucleo", LAB, NOW_NS)
    assert line == (
        "twin_location,device=nucleo-1,thing=nucleo"
        f' latitude=48.1497,longitude=11.5679,name="Lab \\"A\\", room 1" {NOW_NS}'
    )
    high = Location(name="Top\nfloor", latitude=-90, longitude=180, altitude=273.0)
    assert location_line("twin location", "d", "t", high, 5) == (
        'twin\\ location,device=d,thing=t altitude=273,latitude=-90,longitude=180,name="Top floor" 5'
    )


@given(
    st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 10 * MINUTE_NS)), max_size=60),
    st.sampled_from([1.0, 60.0, 300.0]),
)
def test_one_location_point_per_device_and_window_stamped_with_the_window_start(
    readings: list[tuple[str, int]], interval_s: float
) -> None:
    interval_ns = int(interval_s * 1e9)
    located = LocationPoints("twin_location", interval_s, lambda d: None if d == "c" else ("t", LAB))
    due = [(device, located.due(device, NOW_NS + t)) for device, t in readings]
    written = [(device, point) for device, point in due if point is not None]
    windows = {(d, (NOW_NS + t) // interval_ns) for d, t in readings if d != "c"}
    assert len(written) == len(windows)  # once per window, in any order of arrival; never for "c"
    for device, (line, time_ns) in written:
        assert time_ns % interval_ns == 0 and line.endswith(f" {time_ns}")
        assert line.startswith(f"twin_location,device={device},thing=t ")
    # A second run (a restart, a re-delivery, another replica) stamps the identical points.
    again = LocationPoints("twin_location", interval_s, lambda d: None if d == "c" else ("t", LAB))
    assert {p for _, p in written} == {p for d, t in readings if (p := again.due(d, NOW_NS + t))}


def test_the_ingestion_batches_a_location_with_the_first_reading_and_each_new_window() -> None:
    stage = ingestion({"location_interval_s": 60})
    batch = Batch()
    t0 = NOW_NS - 3 * MINUTE_NS
    for i, offset in enumerate([0, 1, 59, 61, 62, 200]):
        stage.accumulate(batch, record(reading("sim-1", t0 + offset * 10**9, seq=i), offset=i))
    stage.accumulate(batch, record(reading("bench-7", t0), offset=9))  # no thing: no location
    assert len(batch.lines) == 7
    assert batch.location_times == [t0 - t0 % MINUTE_NS + k * MINUTE_NS for k in (0, 1, 3)]
    assert all(line.startswith("twin_location,device=sim-1,thing=simulated ") for line in batch.locations)
    assert 'latitude=48.15,longitude=11.569,name="Simulated lab"' in batch.locations[0]


def test_location_points_are_written_in_the_same_request_and_counted() -> None:
    requests: list[list[str]] = []
    config = parse_config({"ingestion": {"retention_s": 0}}, {})
    stage = Ingestion(
        config,
        consumer=SimpleNamespace(commit=lambda offsets: None, assignment=lambda: set()),
        write=requests.append,
        dead_letters=None,
    )  # type: ignore[arg-type]
    batch = Batch()
    stage.accumulate(batch, record(reading("sim-1", NOW_NS)))
    stage.accumulate(batch, record(reading("sim-2", NOW_NS)))
    before = sample("twinpipe_ingestion_location_points_written_total")
    assert stage._write_isolating_rejects(batch) == []
    assert len(requests) == 1 and len(requests[0]) == 4
    assert sample("twinpipe_ingestion_location_points_written_total") - before == 2


def test_no_location_points_when_the_measurement_is_null() -> None:
    stage = ingestion({"location_measurement": None})
    batch = Batch()
    stage.accumulate(batch, record(reading("sim-1", NOW_NS)))
    assert len(batch.lines) == 1 and batch.locations == []


# --- the dashboard follows the model ---


def test_the_shipped_dashboard_is_what_the_shipped_config_generates() -> None:
    config = load_config(SHIPPED, {})
    assert OUTPUT.read_text() == render(config), "run: python -m twinpipe dashboard"
    assert main(["dashboard", "--config", SHIPPED, "--check"]) == 0


def test_the_dashboard_follows_the_file_not_one_process_environment(monkeypatch) -> None:
    monkeypatch.setenv("TWINPIPE__INGESTION__MEASUREMENT", "elsewhere")
    assert main(["dashboard", "--config", SHIPPED, "--check"]) == 0


def test_dashboard_check_fails_on_drift_and_the_command_rewrites(tmp_path) -> None:
    stale = tmp_path / "twin.json"
    stale.write_text("{}\n")
    assert main(["dashboard", "--config", SHIPPED, "--output", str(stale), "--check"]) == 1
    assert main(["dashboard", "--config", SHIPPED, "--output", str(stale)]) == 0
    assert main(["dashboard", "--config", SHIPPED, "--output", str(stale), "--check"]) == 0


def test_the_rewrite_replaces_the_file_whole_and_leaves_it_readable_by_grafana(tmp_path) -> None:
    """Grafana (uid 472) polls the file the twin-dashboard service (uid 10001) rewrites: a reader
    holding the old file keeps reading all of it, and the new one is world-readable."""
    target = tmp_path / "digital-twin.json"
    target.write_text("{}\n")
    target.chmod(0o600)
    with target.open() as reader:
        assert main(["dashboard", "--config", SHIPPED, "--output", str(target)]) == 0
        assert reader.read() == "{}\n", "renamed over, not truncated and rewritten in place"
    assert target.read_text() == render(load_config(SHIPPED, {}))
    assert target.stat().st_mode & 0o777 == 0o644
    assert [path.name for path in tmp_path.iterdir()] == ["digital-twin.json"], "no temporary file left"


TEXT = st.characters(blacklist_categories=["Cs"])  # anything UTF-8 can encode


@settings(max_examples=30, deadline=None)
@given(old=st.none() | st.text(TEXT), new=st.text(TEXT))
def test_write_replacing_leaves_exactly_the_new_text(tmp_path_factory, old: str | None, new: str) -> None:
    folder = tmp_path_factory.mktemp("twin")
    target = folder / "digital-twin.json"
    if old is not None:
        target.write_text(old)
    write_replacing(target, new)
    assert target.read_bytes() == new.encode()
    assert sorted(path.name for path in folder.iterdir()) == ["digital-twin.json"]


def test_a_model_that_does_not_validate_writes_nothing_and_names_the_key(tmp_path, capsys) -> None:
    """Under compose this fails the twin-dashboard service, and Grafana, which waits for it, stays
    down: `make up` names the service with its log instead of serving a stale twin."""
    broken = tmp_path / "config.yaml"
    text = (ROOT / "config.yaml").read_text()
    broken.write_text(text.replace("latitude: ", "latitude: 1", 1))  # e.g. 48.1 → 148.1
    target = tmp_path / "digital-twin.json"
    target.write_text("{}\n")
    assert main(["dashboard", "--config", str(broken), "--output", str(target)]) == 1
    assert "latitude" in capsys.readouterr().err
    assert target.read_text() == "{}\n"


def test_an_output_that_cannot_be_written_is_named_with_the_reason(tmp_path, capsys) -> None:
    target = tmp_path / "not-mounted" / "digital-twin.json"
    assert main(["dashboard", "--config", SHIPPED, "--output", str(target)]) == 1
    error = capsys.readouterr().err
    assert f"cannot write the dashboard to {target}" in error and "No such file or directory" in error


def test_names_and_units_come_from_the_model() -> None:
    config = load_config(SHIPPED, {})
    model = config.model
    changed = json.loads(json.dumps(config.model_dump(mode="json")))
    changed["model"]["things"]["nucleo"]["datastreams"]["wall1_temperature"]["name"] = "North wall"
    changed["model"]["observed_properties"]["temperature"]["unit"] = {"code": "[degF]", "symbol": "°F"}
    dashboard = digital_twin(parse_config(changed, {}))
    panels = {panel["title"]: panel for panel in dashboard["panels"]}
    latest = panels["Latest · Nucleo board"]
    assert [t["refId"] for t in latest["targets"]] == list(model.things["nucleo"].datastreams)
    wall1 = next(t for t in latest["targets"] if t["refId"] == "wall1_temperature")
    assert wall1["alias"] == "North wall"
    units = {
        o["matcher"]["options"]: next(p["value"] for p in o["properties"] if p["id"] == "unit")
        for o in latest["fieldConfig"]["overrides"]
    }
    assert units["wall1_temperature"] == "fahrenheit" and units["wall1_humidity"] == "percent"
    board = panels["Board · Nucleo board"]
    cards = [e for e in board["options"]["root"]["elements"] if e["type"] == "metric-value"]
    assert [c["name"] for c in cards] == list(model.things["nucleo"].datastreams)
    labels = {
        e["config"]["text"]["fixed"] for e in board["options"]["root"]["elements"] if e["type"] == "text"
    }
    assert {"Ambient", "Wall1", "Wall2", "Temperature", "Relative humidity"} <= labels


def test_every_thing_has_latest_and_history_and_the_map_one_state_query_per_located_thing() -> None:
    config = load_config(SHIPPED, {})
    dashboard = digital_twin(config)
    titles = [panel["title"] for panel in dashboard["panels"]]
    for thing in config.model.things.values():
        assert f"Latest · {title(thing)}" in titles and f"History · {title(thing)}" in titles
    assert "Latest · Simulated board sim-*" in titles
    the_map = dashboard["panels"][0]
    assert the_map["type"] == "geomap"
    refs = [t["refId"] for t in the_map["targets"]]
    assert refs == ["locations"] + [f"state_{key}" for key in config.model.things]
    assert all(t["resultFormat"] == "table" for t in the_map["targets"])
    assert the_map["options"]["layers"][0]["location"] == {
        "mode": "coords",
        "latitude": "latitude",
        "longitude": "longitude",
    }
    nucleo = config.model.things["nucleo"]
    assert state_stream(config.model, nucleo).value == "ambient_temperature"
    assert [s.value for s in streams(config.model, config.model.things["simulated"])] == list(
        config.model.observed_properties
    )  # declares none: one per observed property, the values a simulator may be given
    stations = streams(config.model, config.model.things["sand-point"])
    assert [s.value for s in stations] == ["temperature", "humidity", "pressure"]  # declared, not pm2_5…
    assert grafana_unit(config.model.observed_properties["pressure"].unit) in json.dumps(dashboard)
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["device", "sensor"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert ids == list(range(1, len(ids) + 1))


def test_locations_of_readings_set_aside_beyond_retention_are_dropped_and_counted() -> None:
    requests: list[list[str]] = []
    config = parse_config({"ingestion": {"retention_s": 3600}}, {})
    stage = Ingestion(config, consumer=None, write=requests.append, dead_letters=None)  # type: ignore[arg-type]
    batch = Batch()
    now_ns = time.time_ns()
    arrival_ms = now_ns // 10**6
    stage.accumulate(batch, record(reading("sim-1", now_ns - 2 * 3600 * 10**9), 0, arrival_ms))  # too old
    stage.accumulate(batch, record(reading("sim-1", now_ns), 1, arrival_ms))
    assert len(batch.locations) == 2
    before = sample("twinpipe_ingestion_location_points_refused_total")
    stage._set_aside_beyond_retention(batch)
    assert [d.kind for d in batch.dead_letters] == ["beyond_retention"]
    assert len(batch.lines) == 1 and len(batch.locations) == 1 == len(batch.location_times)
    assert batch.location_times[0] == now_ns - now_ns % MINUTE_NS
    assert sample("twinpipe_ingestion_location_points_refused_total") - before == 1
