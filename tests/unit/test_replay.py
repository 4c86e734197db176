"""The replay's pure parts: row parsing (CSV, JSON lines), time rules, order checks, device map, from/to
window, schedule and time shift; the blocking buffer; the pvlib converter on the shipped recordings."""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devstack.pvlib_recording import utc_time
from publisher.buffer import DropOldestBuffer
from publisher.replay import (
    ROW_ERROR_KINDS,
    RecordingError,
    Row,
    RowError,
    checked,
    csv_rows,
    jsonl_rows,
    parse_time,
    schedule_s,
    span,
    time_shift_ns,
)
from twinpipe.config import ConfigError, parse_config
from twinpipe.config.replay import ReplayConfig
from twinpipe.envelope import Envelope, EnvelopeError, decode, encode

ROOT = Path(__file__).resolve().parents[2]
NS = 1_000_000_000
T2025 = 1_735_689_600 * NS  # 2025-01-01T00:00:00Z


def config(**keys: object) -> ReplayConfig:
    return ReplayConfig.model_validate({"path": "r.csv", **keys})


def parse_csv(text: str, **keys: object) -> list[Row | RowError]:
    return list(csv_rows(io.StringIO(text, newline=""), config(**keys)))


def iso(ns: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ns // 1000)).isoformat()


# --- time rules ---

times_us = st.integers(min_value=1, max_value=(2**63 - 1) // 1000 - 1).map(lambda us: us * 1000)


@given(times_us, st.sampled_from(["Z", "+00:00", "+05:30", "-09:00"]))
def test_iso_times_with_any_zone_read_back_exactly(time_ns: int, zone: str) -> None:
    offset = {"Z": 0, "+00:00": 0, "+05:30": 330, "-09:00": -540}[zone]
    local = datetime(1970, 1, 1) + timedelta(microseconds=time_ns // 1000 + offset * 60_000_000)
    if not 1 <= local.year <= 9999:
        return
    text = local.isoformat() + zone
    assert parse_time(text, None, now_ns=2**63) == time_ns  # any time, judged from the far future


@given(st.integers(min_value=1, max_value=9_000_000_000), st.sampled_from(["s", "ms", "us", "ns"]))
def test_epoch_numbers_need_and_follow_the_declared_unit(number: int, unit: str) -> None:
    factor = {"s": NS, "ms": 10**6, "us": 10**3, "ns": 1}[unit]
    assert parse_time(str(number), unit, now_ns=2**63) == number * factor
    assert parse_time(number, unit, now_ns=2**63) == number * factor
    with pytest.raises(ValueError, match="time_unit is not set"):
        parse_time(str(number), None)


@pytest.mark.parametrize(
    ("text", "unit", "message"),
    [
        ("2025-01-01T00:00:00", None, "no zone"),
        ("2025-01-01", None, "no zone"),
        ("1735689600", None, "time_unit is not set"),
        ("yesterday", None, "not ISO 8601"),
        ("", None, "not ISO 8601"),
        ("nan", "s", "not finite"),
        ("-5", "s", "outside"),
        ("1e30", "s", "outside"),
    ],
)
def test_ambiguous_or_bad_times_are_refused_not_guessed(text: str, unit: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_time(text, unit)


def test_fractional_epoch_seconds_are_exact() -> None:
    assert parse_time("1735689600.123456789", "s") == T2025 + 123_456_789
    assert parse_time(1735689600.5, "s") == T2025 + NS // 2


# --- CSV rows ---

values_st = st.lists(
    st.one_of(
        st.floats(allow_nan=False, allow_infinity=False, width=64),
        st.integers(min_value=-(10**15), max_value=10**15),
        st.just(0.0),
    ),
    min_size=3,
    max_size=3,
)


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(min_value=1, max_value=10**9), values_st), min_size=1, max_size=30))
def test_csv_rows_carry_exact_times_and_values_with_their_line_numbers(
    rows: list[tuple[int, list[float]]],
) -> None:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["time", "temperature", "humidity", "pressure"])
    time_ns = T2025
    for step_ms, values in rows:
        time_ns += step_ms * 1000
        writer.writerow([iso(time_ns), *map(repr, values)])
    parsed = parse_csv(out.getvalue(), device="board")
    assert all(isinstance(row, Row) for row in parsed)
    assert [row.line for row in parsed] == list(range(2, len(rows) + 2))
    assert [row.values for row in parsed] == [
        {"temperature": float(v[0]), "humidity": float(v[1]), "pressure": float(v[2])} for _, v in rows
    ]
    assert [row.time_ns for row in parsed] == sorted({row.time_ns for row in parsed})
    assert {row.device for row in parsed} == {"board"}


def test_each_malformed_csv_row_is_an_error_with_its_line_and_the_rest_are_read() -> None:
    text = (
        "time,device,temperature,humidity\n"
        "2025-01-01T00:00:00Z,a,1.5,40\n"  # 2 ok
        "2025-01-01T00:00:01,a,1.5,40\n"  # 3 no zone
        "2025-01-01T00:00:02Z,a,warm,40\n"  # 4 not a number
        "2025-01-01T00:00:03Z,a,1.5\n"  # 5 a column short
        "\n"  # 6 blank: skipped, not an error
        "2025-01-01T00:00:04Z,a,,\n"  # 7 every value empty
        "2025-01-01T00:00:05Z,a,nan,40\n"  # 8 NaN
        "2025-01-01T00:00:06Z,,0.00,\n"  # 9 ok: the configured device, humidity missing
    )
    parsed = parse_csv(text, device="fallback")
    errors = {item.line: item.kind for item in parsed if isinstance(item, RowError)}
    assert errors == {3: "bad_time", 4: "bad_value", 5: "bad_columns", 7: "no_values", 8: "bad_value"}
    rows = [item for item in parsed if isinstance(item, Row)]
    assert [(r.line, r.device, r.values) for r in rows] == [
        (2, "a", {"temperature": 1.5, "humidity": 40.0}),
        (9, "fallback", {"temperature": 0.0}),
    ]


def test_a_header_that_cannot_be_replayed_names_the_key() -> None:
    with pytest.raises(RecordingError, match="time_column: 'time' is not a column"):
        parse_csv("when,temperature\n")
    with pytest.raises(RecordingError, match="column 'seq' cannot be a value name"):
        parse_csv("time,seq\n")
    with pytest.raises(RecordingError, match="columns: \\['pressure'\\] are not columns"):
        parse_csv("time,temperature\n", columns=["pressure"])
    with pytest.raises(RecordingError, match="empty"):
        parse_csv("")
    # origin is reserved too: it would collide with the tag replayed points carry
    with pytest.raises(RecordingError, match="'origin' is reserved"):
        parse_csv("time,origin\n")


def test_chosen_columns_and_epoch_times() -> None:
    parsed = parse_csv("t,x,y\n1735689600000,1,2\n", time_column="t", time_unit="ms", columns=["y"])
    assert parsed == [Row(2, T2025, "replay", {"y": 2.0})]


# --- JSON lines ---


def test_json_lines_read_envelopes_plain_rows_and_report_bad_lines() -> None:
    envelope = encode(Envelope("board-7", "b1", 3, T2025, {"temperature": 21.5}, {"read": T2025}))
    lines = [
        envelope.decode(),  # 1: as consumer_display --json prints it
        '{"time": "2025-01-01T00:00:01Z", "device": "b", "values": {"humidity": 50}}',  # 2
        '{"time": "2025-01-01T00:00:02Z", "temperature": 3, "humidity": null}',  # 3 top-level values
        "not json",  # 4
        '{"time": "2025-01-01T00:00:03Z", "values": {"temperature": "hot"}}',  # 5
        '{"v": 1, "device": "x"}',  # 6 broken envelope
        '{"values": {"temperature": 1}}',  # 7 no time
        "",  # 8 blank
        '{"time": 1735689600, "temperature": 1}',  # 9 epoch without a declared unit
    ]
    parsed = list(jsonl_rows(lines, config(device="dflt")))
    rows = [item for item in parsed if isinstance(item, Row)]
    assert rows == [
        Row(1, T2025, "board-7", {"temperature": 21.5}, in_time_order=False),
        Row(2, T2025 + NS, "b", {"humidity": 50.0}),
        Row(3, T2025 + 2 * NS, "dflt", {"temperature": 3.0}),
    ]
    errors = {item.line: item.kind for item in parsed if isinstance(item, RowError)}
    assert errors == {4: "bad_json", 5: "bad_value", 6: "bad_json", 7: "bad_time", 9: "bad_time"}
    assert set(errors.values()) <= set(ROW_ERROR_KINDS)
    chosen = list(jsonl_rows(lines[:3], config(columns=["humidity"])))
    assert [(item.line, item.values if isinstance(item, Row) else item.kind) for item in chosen] == [
        (1, "no_values"),
        (2, {"humidity": 50.0}),
        (3, "no_values"),
    ]


# --- order, device map, window ---

rows_st = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(min_value=-3, max_value=5)),
    min_size=1,
    max_size=40,
)


@given(
    rows_st, st.dictionaries(st.sampled_from(["a", "b"]), st.sampled_from(["x", "y", "bad id!"]), max_size=2)
)
def test_checked_rows_are_in_order_mapped_and_every_other_row_is_an_error(
    steps: list[tuple[str, int]], device_map: dict[str, str]
) -> None:
    items, time_ns = [], T2025
    for line, (device, step) in enumerate(steps, start=2):
        time_ns += step * NS
        items.append(Row(line, time_ns, device, {"v": 1.0}))
    out = list(checked(items, device_map))
    assert sorted(item.line for item in out) == [row.line for row in items]  # nothing lost silently
    kept = [item for item in out if isinstance(item, Row)]
    for device in {r.device for r in kept}:
        times = [r.time_ns for r in kept if r.device == device]
        assert times == sorted(set(times)), "each device's times strictly increase"
    assert all(
        r.device == device_map.get(src.device, src.device)
        for r in kept
        for src in items
        if src.line == r.line
    )
    assert "bad id!" not in {r.device for r in kept}
    errors = [item for item in out if isinstance(item, RowError)]
    assert {e.kind for e in errors} <= {"time_backwards", "bad_device"}


@given(
    st.lists(st.integers(min_value=0, max_value=100), min_size=1, max_size=50, unique=True),
    st.integers(min_value=0, max_value=100),
    st.integers(min_value=0, max_value=100),
)
def test_from_and_to_keep_the_rows_inside_both_inclusive(seconds: list[int], start: int, width: int) -> None:
    items = [Row(i + 2, T2025 + s * NS, "d", {"v": 1.0}) for i, s in enumerate(sorted(seconds))]
    from_ns, to_ns = T2025 + start * NS, T2025 + (start + width) * NS
    kept = list(checked(items, {}, from_ns, to_ns))
    assert [r.time_ns for r in kept] == [r.time_ns for r in items if from_ns <= r.time_ns <= to_ns]


# --- schedule and time shift ---


@given(
    st.lists(st.integers(min_value=0, max_value=10**12), min_size=1, max_size=50),
    st.floats(min_value=0.001, max_value=1e6),
)
def test_schedule_is_absolute_and_scaled_by_speed(offsets: list[int], speed: float) -> None:
    times = sorted(T2025 + o for o in offsets)
    due = [schedule_s(t, times[0], speed) for t in times]
    assert due[0] == 0
    assert due == sorted(due)
    for t, d in zip(times, due, strict=True):
        assert d == pytest.approx((t - times[0]) / 1e9 / speed, rel=1e-12, abs=1e-12)
    assert all(schedule_s(t, times[0], 0) == 0 for t in times)


@given(
    st.integers(min_value=0, max_value=400 * 86400).map(lambda s: s * NS),
    st.sampled_from([0.0, 0.5, 1.0, 60.0, 3600.0]),
    st.integers(min_value=0, max_value=10**6),
)
def test_end_now_ends_the_recording_when_the_replay_reaches_it_and_never_in_the_future(
    duration_ns: int, speed: float, start_s: int
) -> None:
    first, last = T2025, T2025 + duration_ns
    start_wall = T2025 + 3 * 365 * 86400 * NS + start_s * NS
    shift = time_shift_ns("end_now", first, last, start_wall, speed)
    end_due = start_wall + round(schedule_s(last, first, speed) * 1e9)
    if speed == 0 or speed >= 1:
        assert last + shift == end_due
    else:
        assert first + shift == start_wall
    for t in (first, (first + last) // 2, last):  # event time never ahead of the row's send moment
        assert t + shift <= start_wall + round(schedule_s(t, first, speed) * 1e9) + 1
    if speed == 1.0:
        assert first + shift == start_wall
    assert time_shift_ns("keep", first, last, start_wall, speed) == 0


def test_span_counts_the_rows_to_replay() -> None:
    found = span([Row(2, 5, "a", {}), RowError(3, "bad_time", ""), Row(4, 9, "a", {}), Row(5, 3, "b", {})])
    assert (found.rows, found.first_ns, found.last_ns) == (3, 3, 9)


def test_a_device_going_back_is_refused_but_devices_may_interleave() -> None:
    rows = [
        Row(2, 10, "a", {}),
        Row(3, 8, "b", {}),
        Row(4, 9, "a", {}),
        Row(5, 8, "b", {}),
        Row(6, 11, "a", {}),
    ]
    out = list(checked(rows, {}))
    assert [(item.line, type(item).__name__) for item in out] == [
        (2, "Row"),
        (3, "Row"),
        (4, "RowError"),
        (5, "RowError"),
        (6, "Row"),
    ]
    assert all(item.kind == "time_backwards" for item in out if isinstance(item, RowError))


def test_a_devices_envelopes_may_come_late_from_kafka_but_a_second_copy_is_refused() -> None:
    def envelope(seq: int, time_ns: int) -> str:
        return encode(Envelope("sim-1", "b", seq, time_ns, {"t": float(seq)})).decode()

    # seq 0 re-sent by the bridge after a failed produce lands behind seq 1 and 2; seq 1 twice.
    lines = [envelope(1, T2025 + 2), envelope(2, T2025 + 3), envelope(0, T2025 + 1), envelope(1, T2025 + 2)]
    out = list(checked(jsonl_rows(lines, config()), {}))
    assert [(item.line, type(item).__name__) for item in out] == [
        (1, "Row"),
        (2, "Row"),
        (3, "Row"),
        (4, "RowError"),
    ]
    assert out[3].kind == "time_backwards" and "already" in out[3].reason


# Anything a file can hold once read as UTF-8 with errors="replace": no surrogates.
file_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)


@settings(max_examples=300)
@given(st.lists(file_text, max_size=12), st.sampled_from([None, "s", "ms"]))
def test_any_csv_text_is_read_into_rows_or_errors_with_lines_never_an_exception(
    body: list[str], unit: str | None
) -> None:
    text = "time,device,temperature,humidity\n" + "\n".join(body)
    lines = len(io.StringIO(text, newline="").readlines())  # \r, \n and \r\n end a line, as in the file
    for item in parse_csv(text, time_unit=unit):
        assert 2 <= item.line <= lines
        if isinstance(item, Row):
            assert item.values and all(v == v and abs(v) != float("inf") for v in item.values.values())
            assert 0 < item.time_ns < 2**63
        else:
            assert item.kind in ROW_ERROR_KINDS and item.reason


@settings(max_examples=300)
@given(
    st.lists(
        st.one_of(
            file_text,
            st.dictionaries(
                st.sampled_from(["time", "device", "values", "temperature", "v", "time_ns"]),
                st.one_of(
                    st.none(),
                    st.booleans(),
                    st.integers(),
                    st.floats(),
                    file_text,
                    st.dictionaries(file_text, st.floats()),
                ),
            ).map(json.dumps),
        ),
        max_size=10,
    ),
    st.sampled_from([None, "ns"]),
)
def test_any_json_lines_are_read_into_rows_or_errors_never_an_exception(
    lines: list[str], unit: str | None
) -> None:
    for item in jsonl_rows([line.replace("\n", " ") for line in lines], config(time_unit=unit)):
        assert 1 <= item.line <= len(lines)
        if isinstance(item, Row):
            assert item.values and 0 < item.time_ns < 2**63
        else:
            assert item.kind in ROW_ERROR_KINDS


# --- config ---


def test_replay_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"publisher": {"source": "replay"}})
    assert "publisher.replay.path" in str(caught.value.errors)
    with pytest.raises(ConfigError) as caught:
        parse_config({"publisher": {"replay": {"path": "x.csv", "speed": -1}}})
    assert "publisher.replay.speed" in " ".join(caught.value.errors)
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {
                "publisher": {
                    "replay": {"path": "x.csv", "from": "2025-02-01T00:00:00Z", "to": "2025-01-01T00:00:00Z"}
                }
            }
        )
    assert "after to" in " ".join(caught.value.errors)
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {"publisher": {"replay": {"path": "x.csv", "loop": True, "time_shift": "end_now", "speed": 60}}}
        )
    assert "publisher.replay: loop with time_shift: end_now needs 0 < speed <= 1" in " ".join(
        caught.value.errors
    )
    with pytest.raises(ConfigError) as caught:
        parse_config({"publisher": {"replay": {"path": "x.csv", "device_map": {"a": "_probe"}}}})
    assert "publisher.replay.device_map" in " ".join(caught.value.errors)
    assert (
        parse_config({"publisher": {"replay": {"path": "x.JSONL"}}}).publisher.replay.resolved_format()
        == "jsonl"
    )
    windowed = parse_config({"publisher": {"replay": {"path": "x.csv", "from": "2025-06-01T00:00:00+02:00"}}})
    assert windowed.publisher.replay.from_ns() == T2025 + (151 * 86400 - 7200) * NS
    dumped = windowed.model_dump(mode="json")  # written back as `from`, read again the same
    assert parse_config(dumped, {}) == windowed


# --- envelope origin ---


def test_origin_is_carried_only_when_set_and_only_known_values_pass() -> None:
    live = Envelope("d", "b", 0, T2025, {"t": 1.0})
    assert "origin" not in orjson.loads(encode(live))
    replayed = Envelope("d", "b", 0, T2025, {"t": 1.0}, origin="replay")
    assert decode(encode(replayed)).origin == "replay"
    assert decode(encode(live)).origin is None
    for bad in ("live", "", 1, None):
        payload = orjson.loads(encode(live)) | {"origin": bad}
        if bad is None:
            assert decode(orjson.dumps(payload)).origin is None
            continue
        with pytest.raises(EnvelopeError, match="origin"):
            decode(orjson.dumps(payload))


# --- the replay's buffer waits instead of dropping ---


def test_a_full_buffer_makes_the_replay_wait_and_drops_nothing() -> None:
    buffer: DropOldestBuffer[int] = DropOldestBuffer(3)
    stop = threading.Event()
    done = threading.Event()

    def produce() -> None:
        for i in range(50):
            assert buffer.put_waiting(i, stop)
        done.set()

    threading.Thread(target=produce, daemon=True).start()
    got = []
    while len(got) < 50:
        item = buffer.get(5)
        assert item is not None
        got.append(item)
        assert len(buffer) <= 3
    assert done.wait(5)
    assert got == list(range(50)) and buffer.dropped == 0
    for i in range(3):
        buffer.put(i)
    stop.set()
    assert buffer.put_waiting(99, stop) is False  # stopping: not added, not waiting forever
    assert len(buffer) == 3


# --- the shipped pvlib recordings ---


@pytest.mark.parametrize(
    ("name", "device", "offset_h"), [("greensboro", "greensboro", -5), ("sand-point", "sand-point", -9)]
)
def test_shipped_recordings_are_a_whole_hourly_year_in_utc(name: str, device: str, offset_h: int) -> None:
    path = ROOT / "recordings" / f"{name}-tmy3.csv"
    with open(path, encoding="utf-8", newline="") as stream:
        parsed = list(checked(csv_rows(stream, config(path=str(path))), {}))
    rows = [item for item in parsed if isinstance(item, Row)]
    assert len(rows) == len(parsed) == 8760
    assert {row.device for row in rows} == {device}
    # TMY3 01/01 01:00 local standard time is the first row; 12/31 24:00 the last.
    assert rows[0].time_ns == T2025 + (1 - offset_h) * 3600 * NS
    assert rows[-1].time_ns == T2025 + (365 * 24 - offset_h) * 3600 * NS
    assert all(b.time_ns - a.time_ns == 3600 * NS for a, b in zip(rows, rows[1:], strict=False))
    for row in rows:
        assert set(row.values) == {"temperature", "humidity", "pressure"}
        assert -40 <= row.values["temperature"] <= 50 and 0 <= row.values["humidity"] <= 100
        assert 900 <= row.values["pressure"] <= 1100


def test_tmy3_local_standard_time_and_24_00() -> None:
    assert utc_time("12/31/1980", "24:00", -5.0, 2025) == datetime(2026, 1, 1, 5, tzinfo=UTC)
    assert utc_time("07/04/1981", "13:00", -9.0, 2025) == datetime(2025, 7, 4, 22, tzinfo=UTC)


# --- storage and delay figures ---


def test_only_replayed_points_carry_the_origin_tag_and_a_value_cannot_take_its_name() -> None:
    from influx_ingestion.points import PointMapper

    mapper = PointMapper("telemetry", {"site": "lab"}, {})
    live = Envelope("d1", "b", 0, T2025, {"temperature": 1.5})
    replayed = Envelope("d1", "b", 1, T2025 + 1, {"temperature": 1.5}, origin="replay")
    fields = 'boot="b",seq=0i,temperature=1.5'
    assert mapper.to_line(live) == f"telemetry,device=d1,site=lab {fields} {T2025}"
    assert mapper.to_line(replayed) == (
        f'telemetry,device=d1,origin=replay,site=lab boot="b",seq=1i,temperature=1.5 {T2025 + 1}'
    )
    assert mapper.to_line(live) == f"telemetry,device=d1,site=lab {fields} {T2025}"  # cached apart
    with pytest.raises(ConfigError, match="reserved"):
        parse_config({"ingestion": {"tags": {"origin": "x"}}})


def test_replayed_points_are_counted_and_left_out_of_the_delay_histograms() -> None:
    from types import SimpleNamespace

    from influx_ingestion.ingestion import Batch, observe_write_delays
    from twinpipe.metrics import sample

    now_ns = T2025 + 400 * 86400 * NS
    batch = Batch(
        sources=[SimpleNamespace(timestamp=now_ns // 10**6 - 5)] * 3,
        event_times=[now_ns - 10**7, T2025, T2025 + NS],
        replayed=[False, True, True],
    )
    observed = sample("twinpipe_ingestion_end_to_end_delay_seconds_count")
    absurd = sample("twinpipe_ingestion_clock_anomalies_total", delay="end_to_end", kind="absurd")
    replayed = sample("twinpipe_ingestion_replayed_points_total")
    observe_write_delays(batch, now_ns)
    assert sample("twinpipe_ingestion_end_to_end_delay_seconds_count") - observed == 1
    assert sample("twinpipe_ingestion_clock_anomalies_total", delay="end_to_end", kind="absurd") == absurd
    assert sample("twinpipe_ingestion_replayed_points_total") - replayed == 2


def test_the_display_shows_a_replayed_readings_date_and_origin() -> None:
    from consumer_display.render import format_line

    replayed = Envelope("gso", "b", 7, T2025 + 6 * 3600 * NS, {"temperature": 10.0}, origin="replay")
    assert format_line(replayed, {}) == "2025-01-01 06:00:00 gso (replay) #7 temperature=10.00"
    live = Envelope("gso", "b", 7, T2025 + 6 * 3600 * NS + 5 * 10**6, {"temperature": 10.0})
    assert format_line(live, {}) == "06:00:00.005 gso #7 temperature=10.00"


# --- the source's wiring, without servers ---


def _recording(tmp_path: Path, rows: int, step_s: float = 1.0) -> Path:
    path = tmp_path / "r.csv"
    lines = ["time,temperature"] + [f"{iso(T2025 + round(i * step_s * NS))},{i}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_looped_replay_keeps_or_shifts_times_per_pass(tmp_path: Path) -> None:
    from publisher.replay import ReplaySource

    path = _recording(tmp_path, 4, step_s=0.01)
    for shift in ("keep", "end_now"):
        sent: list[tuple[str, int, float]] = []
        stop = threading.Event()

        def emit(device: str, values: dict[str, float], time_ns: int, sent=sent, stop=stop) -> bool:
            sent.append((device, time_ns, values["temperature"]))
            if len(sent) == 9:
                stop.set()
            return True

        speed = 0 if shift == "keep" else 1  # end_now loops only at speed ≤ 1 (config check)
        source = ReplaySource(
            config(path=str(path), speed=speed, loop=True, time_shift=shift), emit, lambda e: None
        )
        source.run(stop)
        assert not source.finished.is_set(), "stopped, not finished"
        assert [v for _, _, v in sent] == [0, 1, 2, 3, 0, 1, 2, 3, 0]
        times = [t for _, t, _ in sent]
        first, second = times[:4], times[4:8]
        step = NS // 100
        assert [b - a for a, b in zip(first, first[1:], strict=False)] == [step] * 3
        if shift == "keep":
            assert first == second == [T2025 + i * step for i in range(4)]
        else:
            assert second[0] > first[-1], "each pass is new history"
            assert [b - a for a, b in zip(second, second[1:], strict=False)] == [step] * 3


def test_a_replay_that_reaches_its_end_is_finished_and_paced_from_one_start(tmp_path: Path) -> None:
    from publisher.replay import ReplaySource

    path = _recording(tmp_path, 6, step_s=0.05)  # 20 rows/s recorded, at 1×
    sent: list[float] = []
    source = ReplaySource(
        config(path=str(path), speed=1), lambda *_: sent.append(time.monotonic()) or True, lambda e: None
    )
    started = time.monotonic()
    source.run(threading.Event())
    assert source.finished.is_set() and source.rows == 6
    lateness = [at - (started + i * 0.05) for i, at in enumerate(sent)]
    assert all(-0.005 < late < 0.03 for late in lateness), lateness


def test_a_recording_with_nothing_to_replay_stops_the_start_naming_the_key(tmp_path: Path) -> None:
    from publisher.replay import ReplaySource

    path = _recording(tmp_path, 3)
    with pytest.raises(RecordingError, match="publisher.replay.path: .* has no row to replay"):
        ReplaySource(config(path=str(path), **{"from": "2030-01-01T00:00:00Z"}), lambda *_: True, print)
    with pytest.raises(RecordingError, match="cannot open"):
        ReplaySource(config(path=str(tmp_path / "missing.csv")), lambda *_: True, print)


def test_progress_is_a_bar_on_a_terminal_and_log_lines_otherwise(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    from publisher.replay import Progress

    with caplog.at_level("INFO", logger="publisher.replay"):
        progress = Progress(4, interval_s=0.0, interactive=False)
        for _ in range(2):
            progress.row()
        progress.close()
    assert "replay progress: 2/4 rows (50 %), 0 skipped" in caplog.text
    bar = Progress(4, interval_s=60.0, interactive=True)
    for _ in range(4):
        bar.row()
    bar.close()
    assert "4/4" in capsys.readouterr().err


def test_a_replay_that_dies_of_an_error_ends_the_publisher_as_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from devstack.process import free_port
    from publisher.app import Publisher
    from publisher.replay import ReplaySource

    def broken(self: ReplaySource, stop: threading.Event) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(ReplaySource, "run", broken)
    monkeypatch.setattr(threading, "excepthook", lambda args: None)  # the error is the test's own
    path = _recording(tmp_path, 3)
    settings = parse_config(
        {
            "mqtt": {"port": free_port()},  # nothing listens: nothing to deliver anyway
            "publisher": {"source": "replay", "replay": {"path": str(path)}, "shutdown_timeout_s": 0.5},
        }
    )
    started = time.monotonic()
    with caplog.at_level("ERROR", logger="publisher"), Publisher(settings) as publisher:
        publisher.run(threading.Event())
        assert not publisher.health_checks()["source"]()
    assert publisher.failed and time.monotonic() - started < 5
    assert "the replay stopped on an error" in caplog.text


def test_replayed_readings_pass_the_models_plausible_ranges_like_live_ones(tmp_path: Path) -> None:
    from publisher.app import Publisher
    from twinpipe.metrics import sample

    settings = parse_config(
        {
            "publisher": {
                "source": "replay",
                "replay": {"path": str(ROOT / "recordings" / "greensboro-tmy3.csv")},
            }
        }
    )
    publisher = Publisher(settings)  # not connected: accept_replayed only buffers
    before = sample("twinpipe_publisher_out_of_range_total", datastream="temperature")
    assert publisher.accept_replayed("greensboro", {"temperature": 200.0, "humidity": 50.0}, T2025)
    assert len(publisher.buffer) == 0
    assert sample("twinpipe_publisher_out_of_range_total", datastream="temperature") - before == 1
    assert publisher.accept_replayed("greensboro", {"temperature": 20.0, "humidity": 50.0}, T2025)
    [pending] = [publisher.buffer.get(0)]
    assert pending is not None and pending.envelope.origin == "replay" and pending.envelope.time_ns == T2025


def test_a_time_in_the_future_is_a_bad_row_not_a_shift_of_the_whole_recording() -> None:
    """A typo'd year (2099 for 2025) is refused, so it neither reaches the broker nor moves every
    other row under time_shift end_now (found by a new-user run)."""
    now = parse_time("2026-12-01T00:00:00Z", None)
    assert parse_time("2026-12-01T00:04:59Z", None, now_ns=now) > now
    with pytest.raises(ValueError, match="in the future"):
        parse_time("2099-01-01T00:00:02Z", None, now_ns=now)
