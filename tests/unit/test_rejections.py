"""Isolating the points InfluxDB refuses (influx_ingestion.isolate) against a fake InfluxDB that
drops points the way InfluxDB's write path does, and setting aside points beyond retention."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from influx_ingestion.ingestion import RETENTION_SLACK_S, Batch, Ingestion
from influx_ingestion.isolate import BEYOND_RETENTION, REJECTED, oldest_dropped, write_isolating
from twinpipe.config import parse_config
from twinpipe.envelope import Envelope, encode
from twinpipe.influx import PartialWrite, Rejected, Unavailable, partial_write

HOUR_NS = 3600 * 10**9
NOW_NS = 1_800_000_000 * 10**9 + 1234  # the fake server's "now"
RETENTION_NS = HOUR_NS


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ('{"error":"partial write: points beyond retention policy dropped=10"}', PartialWrite(10, True)),
        (
            '{"code":"unprocessable entity","message":"failure writing points to database: partial write:'
            ' points beyond retention policy dropped=1000"}',
            PartialWrite(1000, True),
        ),
        (
            "failure writing points to database: partial write: dropped 550 points outside retention policy"
            " of duration 8760h0m0s - oldest point fritzbox,box=fritz.box at 2022-05-09T10:22:00Z dropped"
            " because it violates a Retention Policy Lower Bound at 2025-03-05T16:34:57.686336708Z, newest"
            " point fritzbox,box=fritz.box at 2025-02-23T14:44:00Z dropped because it violates a Retention"
            " Policy Lower Bound at 2025-03-05T16:34:57.686336708Z dropped=550 for database: 91040e1bf6671dfd"
            " for retention policy: autogen",
            PartialWrite(550, True),
        ),
        (
            'partial write: field type conflict: input field \\"v\\" on measurement \\"t2\\" is type string,'
            " already exists as type float dropped=1",
            PartialWrite(1, False),
        ),
        ("partial write: shard 7 is pending deletion dropped=4", PartialWrite(4, False)),
        (
            "partial write: dropped 3 points outside retention policy and 2 points outside write window:"
            " ... dropped=5",
            PartialWrite(5, False),
        ),
        ('{"code":"invalid","message":"unable to parse \'x\': missing fields"}', None),
        ('{"code":"request too large","message":"unable to read data: points batch is too large"}', None),
    ],
)
def test_partial_writes_are_read_from_influxdb_1_and_2_messages(
    message: str, expected: PartialWrite | None
) -> None:
    assert partial_write(message) == expected


class FakeInflux:
    """Drops points as InfluxDB 1.x/2.x's coordinator does (points_writer.go MapShards): a point older
    than now − retention is kept only if a 1 h shard group made for a newer point of the same request
    holds it. Lines ending in `bad` have a conflicting field type and are dropped by the shard, whose
    error hides the retention drops of the request. Everything else is stored."""

    def __init__(self, retention_ns: int = RETENTION_NS) -> None:
        self.retention_ns = retention_ns
        self.stored: set[str] = set()
        self.requests = 0

    def write(self, lines: list[str]) -> None:
        self.requests += 1
        min_ns = NOW_NS - self.retention_ns
        times = [int(line.split()[-2]) for line in lines]
        groups = {t // HOUR_NS for t in times if t >= min_ns}
        kept = [line for line, t in zip(lines, times, strict=True) if t >= min_ns or t // HOUR_NS in groups]
        conflicts = [line for line in kept if line.endswith("bad")]
        self.stored.update(line for line in kept if not line.endswith("bad"))
        if conflicts:
            message = (
                'partial write: field type conflict: input field "v" on measurement "m" is type string,'
                f" already exists as type float dropped={len(conflicts)}"
            )
        elif len(kept) < len(lines):
            message = f"partial write: points beyond retention policy dropped={len(lines) - len(kept)}"
        else:
            return
        raise Rejected(f"HTTP 422: {message}", partial_write(message))


def line(index: int, time_ns: int, bad: bool = False) -> str:
    return f"m,device=d{index} v=1 {time_ns} {'bad' if bad else 'ok'}"


points = st.lists(
    st.tuples(
        st.integers(0, 3 * HOUR_NS),  # age
        st.booleans(),  # a field type conflict
    ),
    max_size=300,
)


@settings(max_examples=300, deadline=None)
@given(points, st.integers(1, 200))
def test_every_point_is_stored_or_refused_and_only_refused_points_are_missing(
    batch: list[tuple[int, bool]], max_requests: int
) -> None:
    server = FakeInflux()
    lines = [line(i, NOW_NS - age, bad) for i, (age, bad) in enumerate(batch)]
    times = [NOW_NS - age for age, _ in batch]
    outcome = write_isolating(lines, times, server.write, max_requests)

    refused = {r.index for r in outcome.refused}
    missing = {i for i, text in enumerate(lines) if text not in server.stored}
    assert missing <= refused  # nothing unaccounted for: at-least-once holds
    assert outcome.requests == server.requests
    if outcome.requests < max_requests:
        assert refused == missing  # isolated exactly: nothing stored is dead-lettered
    for r in outcome.refused:
        assert r.reason.startswith("rejected by InfluxDB: HTTP 422: partial write")
        if r.kind == BEYOND_RETENTION:
            assert "beyond retention" in r.reason and batch[r.index][0] > RETENTION_NS
        else:
            assert r.kind == REJECTED
    bad_points = sum(bad for _, bad in batch)
    if not bad_points:
        assert outcome.requests == min(1, len(batch))  # any number of old points: one request


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 1000), st.integers(0, 1000), st.randoms(use_true_random=False))
def test_old_points_interleaved_with_fresh_ones_cost_one_request(old: int, fresh: int, rng) -> None:
    server = FakeInflux()
    ages = [2 * HOUR_NS + i for i in range(old)] + [i * 1000 for i in range(fresh)]
    rng.shuffle(ages)
    lines = [line(i, NOW_NS - age) for i, age in enumerate(ages)]
    outcome = write_isolating(lines, [NOW_NS - age for age in ages], server.write, 100)
    assert outcome.requests == (1 if ages else 0)
    assert len(outcome.refused) == old and len(server.stored) == fresh
    assert all(ages[r.index] > HOUR_NS for r in outcome.refused)


def test_one_conflicting_point_among_many_is_isolated_in_logarithmically_many_requests() -> None:
    server = FakeInflux()
    lines = [line(i, NOW_NS - i, bad=i == 1234) for i in range(5000)]
    outcome = write_isolating(lines, [NOW_NS - i for i in range(5000)], server.write, 100)
    assert [r.index for r in outcome.refused] == [1234]
    assert outcome.requests <= 2 * 13 + 1  # two writes per level of a 5,000-point bisection
    assert "field type conflict" in outcome.refused[0].reason


def test_a_group_all_refused_is_not_split() -> None:
    server = FakeInflux()
    lines = [line(i, NOW_NS - i, bad=True) for i in range(1000)]
    outcome = write_isolating(lines, [NOW_NS - i for i in range(1000)], server.write, 100)
    assert len(outcome.refused) == 1000 and outcome.requests == 1


def test_splitting_stops_at_the_bound_and_says_so() -> None:
    server = FakeInflux()
    lines = [line(i, NOW_NS - i, bad=i % 2 == 0) for i in range(1000)]
    outcome = write_isolating(lines, [NOW_NS - i for i in range(1000)], server.write, 20)
    assert outcome.requests <= 20 + 11  # the bound, plus at most one write per level below it
    missing = {i for i, text in enumerate(lines) if text not in server.stored}
    assert missing <= {r.index for r in outcome.refused}
    assert any("not split further after" in r.reason for r in outcome.refused)


def test_a_retention_count_that_does_not_cut_cleanly_in_time_is_not_trusted() -> None:
    assert oldest_dropped([0, 1, 2], [5, 5, 9], 1) is None  # a tie across the cut
    assert oldest_dropped([0, 1, 2], [5, 5, 9], 4) is None  # more than written
    assert oldest_dropped([0, 1, 2], [9, 5, 7], 2) == [1, 2]


# --- setting aside before writing ---


def record(payload: bytes, offset: int) -> SimpleNamespace:
    return SimpleNamespace(
        topic="t", partition=0, offset=offset, key=None, value=payload, timestamp=time.time_ns() // 10**6
    )


def reading(seq: int, age_s: float) -> bytes:
    """Aged from now, not from the module's import: a full run imports it minutes before."""
    return encode(Envelope("d1", "b1", seq, time.time_ns() - int(age_s * 1e9), {"temperature": 20.0}))


def stage(settings_: dict, read=None) -> tuple[Ingestion, list[list[str]]]:
    writes: list[list[str]] = []
    config = parse_config({"ingestion": settings_}, {})
    return Ingestion(config, None, writes.append, None, read), writes  # type: ignore[arg-type]


def filled(ingestion: Ingestion, ages_s: list[float]) -> Batch:
    batch = Batch()
    for seq, age in enumerate(ages_s):
        ingestion.accumulate(batch, record(reading(seq, age), seq))
    return batch


def test_points_beyond_a_known_retention_are_dead_lettered_without_being_sent() -> None:
    old_age = 3600 + RETENTION_SLACK_S + 60
    ingestion, _ = stage({}, read=lambda: 3600.0)
    batch = filled(ingestion, [1, old_age, 2, old_age, 3600 - 60])
    ingestion._set_aside_beyond_retention(batch)
    assert [d.record.offset for d in batch.dead_letters] == [1, 3]
    assert all(d.kind == BEYOND_RETENTION for d in batch.dead_letters)
    assert "older than the bucket's retention (3600 s)" in batch.dead_letters[0].reason
    assert [r.offset for r in batch.sources] == [0, 2, 4] and len(batch.lines) == len(batch.event_times) == 3


def test_the_configured_retention_wins_and_zero_sets_nothing_aside() -> None:
    def never() -> float:
        raise AssertionError("the bucket is not asked when ingestion.retention_s is set")

    ingestion, _ = stage({"retention_s": 7200}, read=never)
    batch = filled(ingestion, [7200 + RETENTION_SLACK_S + 1, 3600 + RETENTION_SLACK_S + 1])
    ingestion._set_aside_beyond_retention(batch)
    assert [d.record.offset for d in batch.dead_letters] == [0]
    assert "ingestion.retention_s (7200 s)" in batch.dead_letters[0].reason

    ingestion, _ = stage({"retention_s": 0}, read=never)
    batch = filled(ingestion, [10 * 86400])
    ingestion._set_aside_beyond_retention(batch)
    assert not batch.dead_letters and len(batch.lines) == 1


def test_an_unreadable_retention_sets_nothing_aside_and_is_asked_again_later() -> None:
    calls = []

    def unreadable() -> float:
        calls.append(1)
        raise Unavailable("HTTP 401: unauthorized access")

    ingestion, _ = stage({}, read=unreadable)
    for _ in range(3):
        batch = filled(ingestion, [10 * 86400])
        ingestion._set_aside_beyond_retention(batch)
        assert not batch.dead_letters
    assert len(calls) == 1  # not once per batch
