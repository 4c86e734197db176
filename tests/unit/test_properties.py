"""Property tests for the mappers and the config parser: on any input they return a valid value or a
typed error with a reason, never anything else."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from influxdb_client import Point, WritePrecision

from influx_ingestion.points import PointMapper, Unstorable
from latency_probe.recorder import summary_lines
from twinpipe.config import ConfigError, parse_config
from twinpipe.envelope import Envelope, EnvelopeError, decode, encode
from twinpipe.names import is_value_name, tag_key_problem, tag_value_problem

names = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,15}", fullmatch=True).filter(is_value_name)
tag_keys = names.filter(lambda key: tag_key_problem(key) is None)
devices = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
tag_values = st.text(min_size=1, max_size=20).filter(lambda t: tag_value_problem(t) is None)

envelopes = st.builds(
    Envelope,
    device=devices,
    boot=st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True),
    seq=st.integers(0, 2**63 - 1),
    time_ns=st.integers(1, 2**63 - 1),
    values=st.dictionaries(names, finite, min_size=1, max_size=8),
)


@given(envelopes, st.dictionaries(tag_keys, tag_values, max_size=3))
def test_any_valid_envelope_maps_to_one_line_of_line_protocol(
    envelope: Envelope, tags: dict[str, str]
) -> None:
    mapper = PointMapper("telemetry", tags, {})
    if not tags.keys().isdisjoint(envelope.values):
        with pytest.raises(Unstorable, match="are tag keys of this series"):
            mapper.to_line(envelope)  # never a field beside a tag of the same name
        return
    line = mapper.to_line(envelope)
    assert line.startswith("telemetry,") and "\n" not in line
    assert line.endswith(f" {envelope.time_ns}")
    assert f"seq={envelope.seq}i" in line


def point_line(envelope: Envelope, measurement: str, tags: dict[str, str]) -> str:
    """The reference: influxdb-client's own Point, which the mapper must match byte for byte."""
    point = Point(measurement).tag("device", envelope.device)
    for key, value in tags.items():
        point.tag(key, value)
    for name, value in envelope.values.items():
        point.field(name, float(value))
    point.field("seq", envelope.seq).field("boot", envelope.boot)
    return point.time(envelope.time_ns, WritePrecision.NS).to_line_protocol()


@given(
    envelopes, st.dictionaries(tag_keys, tag_values, max_size=3), st.sampled_from(["telemetry", "my data,x"])
)
def test_the_mapper_writes_exactly_the_line_influxdb_client_would(
    envelope: Envelope, tags: dict[str, str], measurement: str
) -> None:
    assume(tags.keys().isdisjoint(envelope.values))
    assert PointMapper(measurement, tags, {}).to_line(envelope) == point_line(envelope, measurement, tags)


@given(envelopes)
def test_encode_then_decode_is_identity_for_any_valid_envelope(envelope: Envelope) -> None:
    assert decode(encode(envelope)) == envelope


@given(
    st.dictionaries(
        st.text(max_size=10), st.one_of(st.none(), st.integers(), st.text(max_size=10)), max_size=4
    )
)
def test_envelope_like_objects_decode_or_fail_with_a_reason(fields: dict) -> None:
    payload = encode(Envelope("d", "b", 1, 1, {"t": 1.0})).replace(
        b"}", b"," + str(fields).encode() + b"}", 1
    )
    try:
        decode(payload)
    except EnvelopeError as exc:
        assert exc.reason and exc.kind in ("too_large", "not_json", "version", "invalid")


yaml_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=12)
)
documents = st.recursive(
    yaml_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
section_names = st.sampled_from(
    ["mqtt", "kafka", "influxdb", "publisher", "bridge", "ingestion", "latency_probe", "health", "logging"]
)


@settings(max_examples=200)
@given(st.dictionaries(section_names, documents, max_size=4))
def test_any_config_document_parses_or_names_its_errors(document: dict) -> None:
    try:
        parse_config(document, {})
    except ConfigError as exc:
        assert exc.errors and all(": " in line for line in exc.errors)


@given(st.dictionaries(names, st.lists(finite.map(abs), min_size=1, max_size=50), max_size=5))
def test_latency_summaries_are_valid_points_for_any_samples(windows: dict[str, list[float]]) -> None:
    for line in summary_lines("twinpipe_latency", windows, 1_700_000_000_000_000_000):
        assert line.startswith("twinpipe_latency,hop=") and line.endswith(" 1700000000000000000")
    assert len(summary_lines("m", windows, 1)) == len(windows)
