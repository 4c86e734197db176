"""Property: every name the envelope accepts is stored by the real InfluxDB unchanged and never hides
a tag. Hypothesis collects envelopes from arbitrary names (most are refused), the mapper writes the
accepted ones in one batch through the InfluxDB 2 shim, and InfluxQL reads them back."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from influx_ingestion.points import PointMapper
from tests.harness import Pipeline
from twinpipe.config import parse_config
from twinpipe.envelope import Envelope, EnvelopeError, decode
from twinpipe.influx import InfluxWriter
from twinpipe.names import DEVICE_PATTERN, NAME_PATTERN, tag_value_problem

T0 = 1_700_000_000_000_000_000
TRICKY = ["device", "time", "seq", "boot", "_probe", "_field", "dev\n", "t\n", "Time", "DEVICE", "a.b-c_d"]

device_ids = st.one_of(
    st.from_regex(DEVICE_PATTERN, fullmatch=True), st.sampled_from(TRICKY), st.text(max_size=10)
)
value_names = st.one_of(
    st.from_regex(NAME_PATTERN, fullmatch=True), st.sampled_from(TRICKY), st.text(max_size=10)
)
tag_values = st.one_of(
    st.text(min_size=1, max_size=12),
    st.sampled_from(["C\\", "a\\b", "x y", "a,b=c", "☀ sun", "quote'd", 'dq"x', "back\\\\slash"]),
)


def influxql_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def test_any_name_the_envelope_accepts_is_stored_and_read_back_unchanged(pipeline: Pipeline) -> None:
    series: dict[str, tuple[str, list[Envelope]]] = {}  # device → (its site tag, its envelopes)

    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(device_ids, st.lists(value_names, min_size=1, max_size=4, unique=True), tag_values)
    @example("_probe", ["probe"], "a\\b")
    @example("nucleo-1", ["Time", "Device", "temperature"], " lead and trail ")
    @example("A.b_c-9", ["x"], "☀ sun, =wind")
    @example("z" * 64, ["y" * 64], "dq\"x'q")
    @example("dev\n", ["t"], "x")  # refused
    @example("d", ["device", "t"], "x")  # refused
    def collect(device: str, names: list[str], site: str) -> None:
        payload = {"v": 1, "device": device, "boot": "b", "seq": 0, "time_ns": T0, "values": {}}
        payload["values"] = {name: i + 0.5 for i, name in enumerate(names)}
        try:
            envelope = decode(json.dumps(payload).encode())
        except EnvelopeError:
            return
        if tag_value_problem(site):
            site = "ok"
        entry = series.setdefault(envelope.device, (site, []))
        envelope.seq = len(entry[1])
        envelope.time_ns = T0 + envelope.seq
        entry[1].append(envelope)

    collect()
    assert len(series) >= 10, f"too few accepted envelopes to mean anything: {list(series)}"
    mapper = PointMapper("telemetry", {}, {device: {"site": site} for device, (site, _) in series.items()})
    lines = [mapper.to_line(envelope) for _, envelopes in series.values() for envelope in envelopes]
    config = parse_config(pipeline.config(), pipeline.stack.env())
    writer = InfluxWriter(config.influxdb)
    try:
        writer.write(lines)  # one batch: any rejected point fails the whole test
    finally:
        writer.close()

    for device, (site, envelopes) in series.items():
        # Selected by the device tag: a field of the same name would make this find nothing.
        rows = pipeline.influx_rows(
            f'SELECT * FROM "telemetry" WHERE "device" = {influxql_string(device)} ORDER BY time'
        )
        assert len(rows) == len(envelopes), (device, rows)
        for row, envelope in zip(rows, envelopes, strict=True):
            assert row["device"] == device and row["site"] == site
            assert row["time"] == envelope.time_ns and row["seq"] == envelope.seq and row["boot"] == "b"
            stored = {k: v for k, v in row.items() if v is not None and k not in ("time", "device", "site")}
            assert stored == {**envelope.values, "seq": envelope.seq, "boot": "b"}, (device, row)
        by_site = pipeline.influx_rows(
            f'SELECT count("seq") FROM "telemetry" WHERE "site" = {influxql_string(site)}'
            f' AND "device" = {influxql_string(device)}'
        )
        assert by_site and by_site[0]["count"] == len(envelopes), (device, site)
