"""The model in the real InfluxDB, written by the real ingestion from Kafka: the `thing` tag on every
point of a modelled device, and the Geomap panel's own location query answering one row per device
with numeric latitude and longitude."""

from __future__ import annotations

import time

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from kafka import KafkaProducer

from influx_ingestion.points import location_line
from tests.dashboards import TWIN_DASHBOARD, load, substitute
from tests.harness import Pipeline, poll
from twinpipe.config import parse_config
from twinpipe.config.model import Location
from twinpipe.envelope import Envelope, encode
from twinpipe.influx import InfluxWriter

MINUTE_NS = 60 * 10**9
T0 = 1_700_000_000_000_000_000
# One device of each thing in the shipped model, and one the model does not know.
DEVICES = {"nucleo-1": "nucleo", "sim-7": "simulated", "greensboro": "greensboro", "sand-point": "sand-point"}
LONER = "bench-9"


def produce(pipeline: Pipeline, envelopes: list[Envelope]) -> None:
    producer = KafkaProducer(bootstrap_servers=[pipeline.stack.kafka.bootstrap], acks="all")
    for envelope in envelopes:
        producer.send(pipeline.telemetry_topic, key=envelope.device.encode(), value=encode(envelope))
    producer.flush()
    producer.close()


def readings(start_ns: int) -> list[Envelope]:
    """Three readings per device, 40 s apart: two or three 60 s windows of event time each."""
    return [
        Envelope(device, "boot-1", seq, start_ns + seq * 40 * 10**9, {"temperature": 20.0 + seq})
        for device in [*DEVICES, LONER]
        for seq in range(3)
    ]


def map_query() -> str:
    panel = next(p for p in load(TWIN_DASHBOARD)["panels"] if p["type"] == "geomap")
    target = next(t for t in panel["targets"] if t["refId"] == "locations")
    assert target["resultFormat"] == "table"
    return substitute(target["query"], {})


def test_points_carry_the_thing_and_the_map_query_gives_one_numeric_row_per_device(
    pipeline: Pipeline,
) -> None:
    model = parse_config(pipeline.config(), {}).model
    now_ns = time.time_ns()
    start_ns = now_ns - now_ns % MINUTE_NS - 3 * MINUTE_NS + 5 * 10**9  # readings 5 s, 45 s, 85 s in
    sent = readings(start_ns)
    produce(pipeline, sent)
    ingestion = pipeline.stage("influx_ingestion")
    poll(pipeline.influx_count, lambda n: n == len(sent), 30, f"{len(sent)} points")

    tags = {
        row["device"]: row["thing"]
        for row in pipeline.influx_rows('SELECT "temperature", "device", "thing" FROM "telemetry"')
    }
    assert tags == {**DEVICES, LONER: None}

    # The panel's exact query, as Grafana would send it with its default time range.
    series = pipeline.stack.influxd.query(map_query(), pipeline.bucket)
    assert sorted(s["tags"]["device"] for s in series) == sorted(DEVICES), series
    for s in series:
        device, thing = s["tags"]["device"], s["tags"]["thing"]
        assert thing == DEVICES[device]
        assert len(s["values"]) == 1, f"one row per device: {s}"  # table format: one row each
        row = dict(zip(s["columns"], s["values"][0], strict=True))
        location = model.things[thing].location
        assert isinstance(row["latitude"], float) and isinstance(row["longitude"], float)
        assert (row["latitude"], row["longitude"]) == (location.latitude, location.longitude)
        assert row["location"] == location.name

    # One location point per device and 60 s window with readings, stamped with the window's start.
    def windows(device: str) -> list[int]:
        times = {e.time_ns - e.time_ns % MINUTE_NS for e in sent if e.device == device}
        return sorted(times)

    rows = pipeline.influx_rows('SELECT "latitude", "device", "altitude" FROM "twin_location"')
    for device in DEVICES:
        assert [r["time"] for r in rows if r["device"] == device] == windows(device)
    assert {r["altitude"] for r in rows if r["device"] == "greensboro"} == {273.0}
    assert {r["altitude"] for r in rows if r["device"] == "sim-7"} == {None}  # not set in the model

    # A restart that re-reads everything (a new consumer group) rewrites the same location points.
    assert ingestion.stop() == 0
    again = pipeline.stage("influx_ingestion", {"ingestion": {"group_id": f"again-{pipeline.id}"}})
    produce(pipeline, readings(start_ns + 10**6)[:1])  # one more reading in a window already located
    poll(pipeline.influx_count, lambda n: n == len(sent) + 1, 30, "the extra point")
    assert len(pipeline.influx_rows('SELECT "latitude" FROM "twin_location"')) == len(rows)
    assert again.stop() == 0


def test_any_location_the_model_accepts_is_stored_and_read_back(pipeline: Pipeline) -> None:
    """Hypothesis over the model's whole Location space (names with quotes, backslashes, any Unicode;
    coordinates at the poles and the antimeridian): one batch through the InfluxDB 2 shim, read back."""
    located: list[tuple[str, Location]] = []

    @settings(max_examples=80, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(
        st.text(min_size=1, max_size=200),
        st.floats(-90, 90),
        st.floats(-180, 180),
        st.none() | st.floats(-500, 9000),
    )
    @example('Lab "A", \\room\\ 1', 90.0, -180.0, None)
    @example("Top\nfloor\ttab", -90.0, 180.0, 0.0)
    def collect(name: str, latitude: float, longitude: float, altitude: float | None) -> None:
        try:
            location = Location(name=name, latitude=latitude, longitude=longitude, altitude=altitude)
        except ValueError:
            return  # the model refuses it (config check), nothing to store
        located.append((f"d{len(located)}", location))

    collect()
    lines = [location_line("twin_location", device, "t", loc, T0) for device, loc in located]
    writer = InfluxWriter(parse_config(pipeline.config(), pipeline.stack.env()).influxdb)
    try:
        writer.write(lines)  # one batch: any refused point fails the test
    finally:
        writer.close()
    rows = {row["device"]: row for row in pipeline.influx_rows('SELECT * FROM "twin_location"')}
    assert len(rows) == len(located)
    for device, location in located:
        row = rows[device]
        assert (row["latitude"], row["longitude"], row["altitude"]) == (
            location.latitude,
            location.longitude,
            location.altitude,
        )
        # Control characters (a newline would end the point) are stored as spaces, nothing else changes.
        assert row["name"] == "".join(c if c.isprintable() else " " for c in location.name)
