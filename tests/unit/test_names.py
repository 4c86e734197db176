"""Names that storage cannot hold are refused everywhere with one reason (twinpipe.names), and event
times that cannot be right are refused naming the likely unit mistake (twinpipe.eventtime)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devstack.process import free_port, http_get
from influx_ingestion.ingestion import REJECTED_STREAK_NOT_READY, Batch, Ingestion, observe_write_delays
from influx_ingestion.points import PointMapper, RecentPoints
from twinpipe.config import ConfigError, parse_config
from twinpipe.envelope import Envelope, EnvelopeError, decode, encode
from twinpipe.eventtime import implausible_time
from twinpipe.health import HealthServer
from twinpipe.metrics import sample
from twinpipe.names import (
    DEVICE_PATTERN,
    NAME_PATTERN,
    device_problem,
    tag_key_problem,
    tag_value_problem,
    value_name_problem,
)

NOW_NS = 1_764_460_800_000_000_000  # 2025-11-30T00:00:00Z
EARLIEST_NS = 946_684_800_000_000_000  # 2000-01-01
TEN_YEARS_S = 10 * 366 * 86400.0
DAY_NS = 86400 * 10**9


def errors_of(document: dict) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(document, {})
    return caught.value.errors


# --- config: an error naming the key ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (
            {"publisher": {"simulator": {"sensors": {"device": {"mean": 1, "stddev": 0}}}}},
            "publisher.simulator.sensors.device.[key]: expected a value name: value name 'device' is"
            " reserved",
        ),
        (
            {"publisher": {"simulator": {"sensors": {"time": {"mean": 1, "stddev": 0}}}}},
            "publisher.simulator.sensors.time.[key]: expected a value name: value name 'time' is reserved",
        ),
        (
            {"publisher": {"serial": {"frame": {"format": "csv", "fields": ["t", "device"]}}}},
            "publisher.serial.frame.fields.1: expected a value name: value name 'device' is reserved",
        ),
        (
            {"publisher": {"serial": {"frame": {"format": "json", "fields": ["time"]}}}},
            "publisher.serial.frame.fields.0: expected a value name: value name 'time' is reserved",
        ),
        (
            {"publisher": {"serial": {"frame": {"format": "csv", "fields": ["t\n"]}}}},
            "publisher.serial.frame.fields.0: expected a value name: value name 't\\n' must match",
        ),
        (
            {"ingestion": {"tags": {"device": "lab-1"}}},
            "ingestion.tags.device.[key]: expected a tag key: tag key 'device' is reserved",
        ),
        ({"ingestion": {"tags": {"time": "x"}}}, "ingestion.tags.time.[key]: expected a tag key"),
        ({"ingestion": {"tags": {"seq": "x"}}}, "ingestion.tags.seq.[key]: expected a tag key"),
        ({"ingestion": {"tags": {"_site": "x"}}}, "ingestion.tags._site.[key]: expected a tag key"),
        (
            {"ingestion": {"tags": {"site": ""}}},
            "ingestion.tags.site: expected a tag value: tag value is empty",
        ),
        (
            {"ingestion": {"tags": {"unit": "C\\"}}},
            "ingestion.tags.unit: expected a tag value: tag value 'C\\\\' has a backslash at the end",
        ),
        (
            {"ingestion": {"tags": {"room": "a\\ b"}}},
            "ingestion.tags.room: expected a tag value: tag value 'a\\\\ b' has a backslash before ' '",
        ),
        ({"ingestion": {"tags": {"site": "lab\n"}}}, "ingestion.tags.site: expected a tag value"),
        (
            {"ingestion": {"device_tags": {"nucleo-1": {"device": "x"}}}},
            "ingestion.device_tags.nucleo-1.device.[key]: expected a tag key",
        ),
        (
            {"ingestion": {"device_tags": {"_probe": {"site": "x"}}}},
            "ingestion.device_tags._probe.[key]: expected a device id: device id '_probe' is reserved",
        ),
        (
            {"ingestion": {"device_tags": {"dev\n": {"site": "x"}}}},
            "ingestion.device_tags.'dev\\n'.[key]: expected a device id",
        ),
        (
            {"ingestion": {"tags": {"temperature": "x"}}},
            "ingestion.tags.temperature: tag key 'temperature' is also a value name in"
            " publisher.simulator.sensors",
        ),
        (
            {"ingestion": {"device_tags": {"n1": {"wall1_humidity": "x"}}}},
            "ingestion.device_tags.n1.wall1_humidity: tag key 'wall1_humidity' is also a value name in"
            " publisher.serial.frame.fields",
        ),
        ({"ingestion": {"measurement": "_m"}}, "ingestion.measurement: expected a measurement name"),
        ({"ingestion": {"measurement": ""}}, "ingestion.measurement: expected a measurement name"),
        ({"publisher": {"serial": {"device_id": "dev\n"}}}, "publisher.serial.device_id: expected a device"),
        (
            {"publisher": {"simulator": {"device_prefix": "x" * 62, "devices": 100}}},
            "publisher.simulator: device_prefix makes device ids that are not allowed",
        ),
        ({"kafka": {"telemetry_topic": "tele\n"}}, "kafka.telemetry_topic: expected a Kafka topic name"),
        ({"ingestion": {"max_event_future_s": -1}}, "ingestion.max_event_future_s: Input should be"),
    ],
)
def test_config_refuses_names_storage_cannot_hold_naming_the_key(document: dict, expected: str) -> None:
    errors = errors_of(document)
    assert len(errors) == 1 and errors[0].startswith(expected), errors


def test_config_accepts_ordinary_tags_and_the_event_time_window() -> None:
    config = parse_config(
        {
            "ingestion": {
                "tags": {"site": "Lab 1, room=2", "path": "C:\\lab\\x"},
                "device_tags": {"nucleo-1": {"location": "wall ☀"}},
                "earliest_event_time": "1990-01-01T00:00:00Z",
            }
        },
        {},
    )
    assert config.ingestion.earliest_event_ns() == 631_152_000 * 10**9
    assert parse_config({}, {}).ingestion.earliest_event_ns() == EARLIEST_NS


# --- the rules themselves ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["temperature", "T1", "a_b", "Time", "Device", "x" * 64])
def test_ordinary_value_names_pass(name: str) -> None:
    assert value_name_problem(name) is None


@pytest.mark.parametrize(
    "name", ["device", "time", "seq", "boot", "_x", "", "t\n", "1t", "a-b", "a b", "x" * 65, "tëmp"]
)
def test_value_names_storage_cannot_hold_are_refused(name: str) -> None:
    assert value_name_problem(name)


@given(st.text(max_size=70))
def test_an_accepted_value_name_is_a_whole_identifier_and_never_a_tag_key(name: str) -> None:
    if value_name_problem(name) is None:
        assert NAME_PATTERN.fullmatch(name) and name == name.strip()
        assert name not in ("device", "time", "seq", "boot") and not name.startswith("_")


@given(st.text(max_size=70))
def test_an_accepted_device_id_is_whole_ascii_and_ends_no_line(device: str) -> None:
    if device_problem(device) is None:
        assert device == "_probe" or DEVICE_PATTERN.fullmatch(device)
        assert device.isascii() and device.isprintable() and not device.endswith("\\")
    if device_problem(device, allow_probe=False) is None:
        assert device != "_probe"


@given(st.text(max_size=30))
def test_an_accepted_tag_value_is_printable_and_survives_line_protocol_escaping(value: str) -> None:
    if tag_value_problem(value) is None:
        assert value and value.isprintable() and not value.endswith("\\")
        for special in ",= ":
            assert "\\" + special not in value


def test_tag_keys_exclude_what_twinpipe_writes_and_influxdb_reserves() -> None:
    assert [tag_key_problem(k) is None for k in ("site", "device", "time", "seq", "boot", "_f")] == [
        True,
        False,
        False,
        False,
        False,
        False,
    ]


def test_the_mapper_refuses_a_configuration_it_cannot_store() -> None:
    with pytest.raises(ValueError, match="tags.site: tag value is empty"):
        PointMapper("telemetry", {"site": ""}, {})
    with pytest.raises(ValueError, match="device_tags.d1.device: tag key 'device' is reserved"):
        PointMapper("telemetry", {}, {"d1": {"device": "x"}})


# --- event times -------------------------------------------------------------------------------------


def judge(time_ns: int, arrival_ns: int = NOW_NS, max_age_s: float = TEN_YEARS_S) -> str | None:
    return implausible_time(time_ns, arrival_ns, EARLIEST_NS, max_age_s, 300.0)


@pytest.mark.parametrize(
    ("time_ns", "expected"),
    [
        (1_764_460_000, "time_ns 1764460000 looks like seconds: as nanoseconds it is 1970-01-01"),
        (1_732_000_000_000, "time_ns 1732000000000 looks like milliseconds"),
        (1_764_460_000_000_000, "time_ns 1764460000000000 looks like microseconds"),
        (3_600_000_000_000, "time_ns 3600000000000 (1970-01-01T01:00:00Z) is before the earliest"),
        (NOW_NS + 3600 * 10**9, "is 1.0 h after its arrival at 2025-11-30T00:00:00Z, more than the 300 s"),
        (NOW_NS + 2 * DAY_NS, "is 2.0 days after its arrival"),
    ],
)
def test_implausible_event_times_name_the_likely_mistake(time_ns: int, expected: str) -> None:
    reason = judge(time_ns)
    assert reason is not None and expected in reason, reason


def test_a_local_clock_taken_for_utc_is_named() -> None:
    reason = judge(NOW_NS + 2 * 3600 * 10**9 - 5_000_000)
    assert reason is not None and "local time taken for UTC (2 h)" in reason


@pytest.mark.parametrize(
    "time_ns",
    [
        NOW_NS - 50_000_000,  # 50 ms in the pipeline
        NOW_NS + 200 * 10**9,  # a publisher clock 200 s ahead
        NOW_NS - 9 * DAY_NS,  # a spool delivering after nine days offline
        NOW_NS - 3 * 365 * DAY_NS,  # a replayed recording three years old
        NOW_NS - 10 * 365 * DAY_NS,  # ten years old
    ],
)
def test_backlogs_and_replays_are_plausible(time_ns: int) -> None:
    assert judge(time_ns) is None


def test_the_age_limit_applies_and_zero_leaves_only_the_floor() -> None:
    old = NOW_NS - 20 * 365 * DAY_NS  # 2005
    reason = judge(old)
    assert reason is not None and "before its arrival" in reason and "more than the 316224000 s" in reason
    assert judge(old, max_age_s=0) is None
    assert judge(EARLIEST_NS - 1, max_age_s=0) is not None


timestamps = st.integers(EARLIEST_NS, NOW_NS)


@given(st.integers(1, 2**63 - 1), st.integers(EARLIEST_NS + DAY_NS, 2**62), st.floats(0, 1e9))
def test_the_verdict_is_exactly_the_window(time_ns: int, arrival_ns: int, max_age_s: float) -> None:
    oldest = max(EARLIEST_NS, arrival_ns - int(max_age_s * 1e9)) if max_age_s else EARLIEST_NS
    inside = oldest <= time_ns <= arrival_ns + 300 * 10**9
    reason = implausible_time(time_ns, arrival_ns, EARLIEST_NS, max_age_s, 300.0)
    assert (reason is None) == inside
    if reason:
        assert str(time_ns) in reason


@given(timestamps, st.sampled_from([("seconds", 10**9), ("milliseconds", 10**6), ("microseconds", 10**3)]))
def test_any_time_of_this_century_in_the_wrong_unit_is_named(true_ns: int, unit: tuple[str, int]) -> None:
    name, factor = unit
    reason = judge(true_ns // factor)
    assert reason is not None and f"looks like {name}" in reason


# --- the ingestion's checks, without servers ---------------------------------------------------------


def record(payload: bytes, offset: int = 0, timestamp_ms: int = NOW_NS // 10**6) -> SimpleNamespace:
    return SimpleNamespace(
        topic="t", partition=0, offset=offset, key=None, value=payload, timestamp=timestamp_ms
    )


def reading(
    device: str = "d1", time_ns: int = NOW_NS - 10**6, boot: str = "b1", seq: int = 0, **values
) -> bytes:
    return encode(Envelope(device, boot, seq, time_ns, values or {"temperature": 20.0}))


def ingestion(settings: dict | None = None) -> Ingestion:
    config = parse_config({"ingestion": settings or {}}, {})
    return Ingestion(config, consumer=None, write=lambda lines: None, dead_letters=None)  # type: ignore[arg-type]


def test_the_ingestion_dead_letters_unit_mistakes_and_tag_hiding_names() -> None:
    stage = ingestion({"tags": {"site": "lab"}})
    batch = Batch()
    before = sample("twinpipe_ingestion_dead_letters_total", kind="implausible_time")
    stage.accumulate(batch, record(reading(time_ns=NOW_NS // 10**6), 0))
    stage.accumulate(batch, record(reading(site=1.0), 1))
    stage.accumulate(batch, record(reading(seq=2), 2))
    assert [d.kind for d in batch.dead_letters] == ["implausible_time", "invalid"]
    assert "looks like milliseconds" in batch.dead_letters[0].reason
    assert "['site'] are tag keys of this series" in batch.dead_letters[1].reason
    assert len(batch.lines) == 1 and list(batch.offsets.values()) == [3]
    assert before == sample("twinpipe_ingestion_dead_letters_total", kind="implausible_time")  # on delivery


def test_the_ingestion_dead_letters_a_reading_with_a_value_outside_its_datastream_range_whole() -> None:
    """Another producer writing straight to Kafka: sim-* devices are things of the shipped model,
    temperature range [-40, 125] Cel; a device of no thing is not checked."""
    stage = ingestion()  # the shipped model
    batch = Batch()
    stage.accumulate(batch, record(reading("sim-1", temperature=999.0, humidity=50.0), 0))
    stage.accumulate(batch, record(reading("sim-1", seq=1, temperature=0.0, humidity=0.0), 1))
    stage.accumulate(batch, record(reading("sim-1", seq=2, temperature=-40.0, humidity=101.0), 2))
    assert [d.kind for d in batch.dead_letters] == ["out_of_range", "out_of_range"]
    assert batch.dead_letters[0].reason == "out of range: temperature = 999.0 outside [-40.0, 125.0]"
    assert batch.dead_letters[1].reason == "out of range: humidity = 101.0 outside [0.0, 100.0]"
    assert len(batch.lines) == 1 and ",temperature=0 " in batch.lines[0]
    stage.accumulate(batch, record(reading("sim-1", seq=3, temperature=125.00000000000003), 3))
    assert batch.dead_letters[-1].reason.endswith("temperature = 125.00000000000003 outside [-40.0, 125.0]")
    unmodelled = Batch()
    stage.accumulate(unmodelled, record(reading("no-thing", temperature=999.0), 0))
    assert len(unmodelled.lines) == 1 and not unmodelled.dead_letters


def test_unknown_envelope_keys_are_counted_and_the_reading_is_stored() -> None:
    stage = ingestion()
    batch = Batch()
    payload = json.loads(reading())
    payload["firmware"] = "2.1"
    before = sample("twinpipe_ingestion_envelopes_with_unknown_keys_total")
    stage.accumulate(batch, record(json.dumps(payload).encode()))
    assert len(batch.lines) == 1 and not batch.dead_letters
    assert sample("twinpipe_ingestion_envelopes_with_unknown_keys_total") - before == 1


def test_two_readings_of_one_device_at_one_time_are_counted_as_an_overwrite() -> None:
    stage = ingestion()
    batch = Batch()
    before = sample("twinpipe_ingestion_points_overwritten_total")
    stage.accumulate(batch, record(reading(boot="b1", seq=5)))
    stage.accumulate(batch, record(reading(boot="b1", seq=5)))  # re-delivery: the identical point
    assert sample("twinpipe_ingestion_points_overwritten_total") == before
    stage.accumulate(batch, record(reading(boot="b2", seq=0)))  # a restart, same time_ns: one point left
    stage.accumulate(batch, record(reading(device="d2", boot="b3", seq=0)))  # another series
    assert sample("twinpipe_ingestion_points_overwritten_total") - before == 1


def test_recent_points_stay_bounded_and_remember_the_previous_generation() -> None:
    recent = RecentPoints(size=3)
    assert not any(recent.overwrites("d", t, "b", t) for t in range(5))
    assert recent.overwrites("d", 4, "other", 0)  # in the current generation
    assert recent.overwrites("d", 2, "other", 0)  # in the previous one
    assert not recent.overwrites("d", 0, "other", 0)  # forgotten
    assert len(recent._current) + len(recent._previous) <= 6


def test_not_ready_while_every_recent_point_is_refused_naming_the_reason() -> None:
    stage = ingestion({"tags": {"site": "lab"}})
    check = stage.ready_checks()["points_stored"]
    batch = Batch()
    for seq in range(REJECTED_STREAK_NOT_READY):
        assert check() is True
        stage.accumulate(batch, record(reading(seq=seq, site=1.0), seq))
    reason = check()
    assert isinstance(reason, str) and "the last 10 points were all refused" in reason
    assert "are tag keys of this series" in reason
    stage.accumulate(batch, record(reading(seq=99), 99))
    stage._note_stored(1, [])  # what a successful write of that point reports
    assert check() is True
    stage._note_stored(1, batch.dead_letters * 3)  # a write with any point accepted: still storing
    assert check() is True
    stage._note_stored(0, batch.dead_letters)
    assert "the last 10 points" in str(check())


def test_readyz_serves_the_reason_of_a_failing_check() -> None:
    port = free_port()
    with HealthServer("127.0.0.1", port, {"loop": lambda: True}, {"points_stored": lambda: "all refused: x"}):
        status, body = http_get(f"http://127.0.0.1:{port}/readyz")
    assert status == 503
    assert json.loads(body) == {
        "status": "fail",
        "failing": ["points_stored"],
        "reasons": {"points_stored": "all refused: x"},
    }


def test_absurd_delays_are_counted_by_kind_and_never_observed() -> None:
    now_ns = NOW_NS
    batch = Batch(
        sources=[SimpleNamespace(timestamp=now_ns // 10**6 - 5)] * 3,
        event_times=[now_ns - 10**7, now_ns - 9 * DAY_NS, now_ns + 10**9],  # ok, a spool backlog, ahead
        replayed=[False] * 3,
    )
    observed = sample("twinpipe_ingestion_end_to_end_delay_seconds_count")
    total = sample("twinpipe_ingestion_end_to_end_delay_seconds_sum")
    absurd = sample("twinpipe_ingestion_clock_anomalies_total", delay="end_to_end", kind="absurd")
    negative = sample("twinpipe_ingestion_clock_anomalies_total", delay="end_to_end", kind="negative")
    observe_write_delays(batch, now_ns, max_plausible_s=3600)
    assert sample("twinpipe_ingestion_end_to_end_delay_seconds_count") - observed == 1
    assert sample("twinpipe_ingestion_end_to_end_delay_seconds_sum") - total < 1
    assert sample("twinpipe_ingestion_clock_anomalies_total", delay="end_to_end", kind="absurd") - absurd == 1
    assert (
        sample("twinpipe_ingestion_clock_anomalies_total", delay="end_to_end", kind="negative") - negative
        == 1
    )


def test_an_envelope_that_decodes_is_never_refused_for_its_names_by_the_default_mapper() -> None:
    mapper = PointMapper("telemetry", {}, {})
    for device in ("nucleo-1", "_probe", "A.b_c-9"):
        envelope = decode(reading(device=device, Time=1.0, Device=2.0))
        assert mapper.to_line(envelope).startswith(f"telemetry,device={device} ")
    with pytest.raises(EnvelopeError):
        decode(reading(device="dev\n"))


def test_not_ready_while_writes_are_retried_naming_the_error() -> None:
    """A write failing for a reason that is not a refused point (e.g. a URL path InfluxDB answers
    404 for) fails readiness with the error, not only the check's name."""
    import threading

    from twinpipe.influx import Unavailable

    attempts = []

    def write(lines: list[str]) -> None:
        attempts.append(lines)
        if len(attempts) < 3:
            raise Unavailable("HTTP 404 page not found")

    config = parse_config({"ingestion": {"retry_initial_s": 0.01, "retry_max_s": 0.01}}, {})
    stage = Ingestion(config, consumer=None, write=write, dead_letters=None)  # type: ignore[arg-type]
    check = stage.ready_checks()["write"]
    seen = []

    def attempt() -> None:
        seen.append(check())
        write(["m v=1 1"])

    assert stage._retry(attempt, "write", "InfluxDB write", threading.Event())
    assert seen[0] is True and "InfluxDB write failing, retried: HTTP 404 page not found" in seen[1]
    assert check() is True


def test_a_future_time_is_called_a_time_zone_mistake_only_within_a_day_of_offsets() -> None:
    arrival = NOW_NS
    hour = 3600 * 10**9
    assert "local time taken for UTC (2 h)" in implausible_time(arrival + 2 * hour, arrival, 0, 0, 300)
    year = implausible_time(arrival + 8760 * hour, arrival, 0, 0, 300)
    assert year is not None and "local time" not in year


def test_version_true_is_not_version_1() -> None:
    payload = encode(Envelope("d", "b", 0, NOW_NS, {"t": 1.0})).replace(b'"v":1', b'"v":true')
    with pytest.raises(EnvelopeError) as error:
        decode(payload)
    assert error.value.kind == "version"
