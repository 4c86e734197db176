"""The alert state machine (alerting/rules.py) and rule resolution (alerting/ruleset.py), without servers.

Property-based over the whole input space: values anywhere (0.00 included), readings at irregular
times, ticks at any moment."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerting.rules import (
    FIRING,
    NS,
    OK,
    PENDING,
    RATE_RESOLUTION,
    RESOLVED,
    MachineState,
    on_anomaly,
    on_reading,
    on_tick,
    restarted,
    window_rate,
)
from alerting.ruleset import RuleSet, fingerprint, label_fingerprint
from twinpipe.config import ConfigError, parse_config
from twinpipe.config.alerting import Rule
from twinpipe.model import TwinModel

values = st.floats(min_value=-50, max_value=150, allow_nan=False).map(lambda v: round(v, 2))
gaps_ns = st.integers(min_value=1, max_value=5 * NS)  # readings 1 ns .. 5 s apart
T0 = 1_764_547_200 * NS


def rule(**fields: object) -> Rule:
    return Rule.model_validate({"observed_property": "temperature", **fields})


def run(r: Rule, readings: list[tuple[int, float]]) -> tuple[MachineState, list[tuple[int, object]]]:
    """Feed readings (event time, value); every transition with the index of the reading behind it."""
    state, seen = MachineState(), []
    for index, (time_ns, value) in enumerate(readings):
        state, transitions = on_reading(r, state, time_ns, value, time_ns)
        seen += [(index, t) for t in transitions]
    return state, seen


def timeline(gaps: list[int], vals: list[float]) -> list[tuple[int, float]]:
    times, now = [], T0
    for gap in gaps:
        now += gap
        times.append(now)
    return list(zip(times, vals, strict=False))


@st.composite
def level_rule(draw: st.DrawFn) -> Rule:
    kind = draw(st.sampled_from(["above", "below"]))
    raise_ = draw(values)
    band = round(draw(st.floats(min_value=0, max_value=20)), 2)
    clear = raise_ - band if kind == "above" else raise_ + band
    for_s = draw(st.sampled_from([0, 1, 7.5]))
    return rule(kind=kind, clear=clear, for_s=for_s, **{"raise": raise_})


@given(level_rule(), st.lists(st.tuples(gaps_ns, values), min_size=1, max_size=80))
def test_the_condition_changes_only_beyond_the_levels_never_inside_the_band(r: Rule, steps: list) -> None:
    readings = timeline([g for g, _ in steps], [v for _, v in steps])
    state = MachineState()
    for time_ns, value in readings:
        before = state.active
        state, _ = on_reading(r, state, time_ns, value, time_ns)
        assert r.raise_ is not None and r.clear is not None
        if state.active and not before:
            assert value > r.raise_ if r.kind == "above" else value < r.raise_
        if before and not state.active:
            assert value < r.clear if r.kind == "above" else value > r.clear


@given(level_rule(), st.lists(st.tuples(gaps_ns, values), min_size=1, max_size=80))
def test_transitions_follow_ok_pending_firing_resolved(r: Rule, steps: list) -> None:
    _, seen = run(r, timeline([g for g, _ in steps], [v for _, v in steps]))
    allowed = {OK: {PENDING, FIRING}, PENDING: {FIRING, OK}, FIRING: {RESOLVED}, RESOLVED: {PENDING, FIRING}}
    previous = OK
    for _, transition in seen:
        assert transition.state in allowed[previous], (previous, transition)
        previous = transition.state


@given(
    st.sampled_from([0.0, 1.0, 5.0, 30.0]),
    st.lists(gaps_ns, min_size=1, max_size=60),
)
def test_for_fires_at_the_first_reading_at_least_for_s_after_the_condition_began(
    for_s: float, gaps: list
) -> None:
    """Every reading is over the level: FIRING comes with the first reading at or after start + for."""
    r = rule(kind="above", **{"raise": 30.0}, clear=28.0, for_s=for_s)
    readings = timeline(gaps, [31.0] * len(gaps))
    _, seen = run(r, readings)
    start = readings[0][0]
    due = [i for i, (t, _) in enumerate(readings) if t - start >= for_s * NS]
    fired = [(i, t) for i, t in seen if t.state == FIRING]
    if not due:
        assert fired == []
        assert [t.state for _, t in seen] == [PENDING]
    else:
        assert [i for i, _ in fired] == [due[0]]
        assert fired[0][1].starts_ns == start and fired[0][1].time_ns == readings[due[0]][0]


@given(st.sampled_from([0.0, 2.0, 10.0]), st.lists(gaps_ns, min_size=2, max_size=40), st.integers(1, 39))
def test_keep_firing_for_holds_the_alert_after_the_condition_cleared(
    keep: float, gaps: list, bad: int
) -> None:
    """`bad` readings over the level, then readings under clear: RESOLVED at the first one at least
    keep_firing_for_s after the last bad reading, never before."""
    bad = min(bad, len(gaps) - 1)
    r = rule(kind="above", **{"raise": 30.0}, clear=28.0, keep_firing_for_s=keep)
    readings = timeline(gaps, [31.0] * bad + [0.0] * (len(gaps) - bad))
    _, seen = run(r, readings)
    last_bad = readings[bad - 1][0]
    due = [i for i in range(bad, len(readings)) if readings[i][0] - last_bad >= keep * NS]
    resolved = [i for i, t in seen if t.state == RESOLVED]
    assert resolved == due[:1]


@given(st.floats(min_value=0.5, max_value=600), st.lists(st.integers(0, 700 * NS), min_size=1, max_size=30))
def test_deadman_fires_after_exactly_the_silence_given(silence_s: float, ticks: list) -> None:
    r = rule(kind="no_data", silence_s=silence_s)
    state, _ = on_reading(r, MachineState(), T0 - 10 * NS, 0.0, T0)  # event time is not its clock
    fired_at = None
    for offset in sorted(ticks):
        state, transitions = on_tick(r, state, T0 + offset)
        if transitions and fired_at is None:
            assert [t.state for t in transitions] == [FIRING]
            fired_at = offset
    exact = round(silence_s * NS)
    late = [o for o in sorted(ticks) if o >= exact]
    assert fired_at == (late[0] if late else None)


def test_deadman_resolves_on_the_next_reading_and_counts_from_a_takeover() -> None:
    r = rule(kind="no_data", silence_s=30)
    state, _ = on_reading(r, MachineState(), T0, 21.5, T0)
    state, transitions = on_tick(r, state, T0 + 30 * NS)
    assert [t.state for t in transitions] == [FIRING]
    state, transitions = on_reading(r, state, T0 + 31 * NS, 0.0, T0 + 31 * NS)
    assert [(t.state, t.ends_ns, t.value) for t in transitions] == [(RESOLVED, T0 + 31 * NS, 31.0)]
    # Restored 100 s later (the stage was down): silence counts from the takeover.
    restored = restarted(r, state, T0 + 131 * NS)
    assert on_tick(r, restored, T0 + 160 * NS)[1] == []
    assert [t.state for t in on_tick(r, restored, T0 + 161 * NS)[1]] == [FIRING]


@given(level_rule(), st.lists(st.tuples(gaps_ns, values), min_size=1, max_size=40), st.data())
def test_redelivered_readings_change_nothing(r: Rule, steps: list, data: st.DataObject) -> None:
    """After a restart the records since the last commit come again: older or equal times are ignored."""
    readings = timeline([g for g, _ in steps], [v for _, v in steps])
    state, _ = run(r, readings)
    again = data.draw(st.lists(st.sampled_from(readings), max_size=20))
    for time_ns, value in again:
        after, transitions = on_reading(r, state, time_ns, value, time_ns)
        assert (after, transitions) == (state, [])


@given(st.lists(st.tuples(st.integers(1, 10 * NS), values), min_size=2, max_size=200))
def test_rate_of_change_is_judged_over_the_window(steps: list) -> None:
    """The rate is taken from the oldest kept reading within window_s (kept ≥ window/120 apart, so at
    most that much younger than the true oldest one) to the newest; the state stays bounded."""
    r = rule(kind="rate_of_change", **{"raise": 0.5}, clear=0.2, window_s=10)
    readings = timeline([g for g, _ in steps], [v for _, v in steps])
    state = MachineState()
    for index, (time_ns, value) in enumerate(readings):
        state, _ = on_reading(r, state, time_ns, value, time_ns)
        within = [(t, v) for t, v in readings[: index + 1] if time_ns - t <= 10 * NS]
        assert len(state.samples) <= RATE_RESOLUTION + 1
        assert all(time_ns - t <= 10 * NS for t, _ in state.samples)
        start = next((s for s in state.samples if s[0] < time_ns), None)
        if start is None:
            assert state.value is None or len(within) >= 2
        else:
            assert start in within and start[0] - within[0][0] <= 10 * NS // RATE_RESOLUTION
            assert state.value == window_rate((start, (time_ns, value)))


def test_rate_of_change_example() -> None:
    r = rule(kind="rate_of_change", **{"raise": 0.5}, clear=0.2, window_s=10)
    readings = [(T0 + i * NS, 20.0 + i) for i in range(8)]  # +1 per s
    _, seen = run(r, readings)
    assert [(i, t.state, t.value) for i, t in seen] == [(5, FIRING, 1.0)]  # judged once 5 s are covered
    state, _ = run(r, readings)
    # A gap longer than the window leaves one reading in it: no rate, the alert stays as it is.
    after_gap, transitions = on_reading(r, state, T0 + 30 * NS, 20.0, T0 + 30 * NS)
    assert transitions == [] and after_gap.state == FIRING


@settings(max_examples=50)
@given(st.randoms(use_true_random=False))
def test_rate_of_change_is_not_fooled_by_noise_before_its_window_is_covered(rng: random.Random) -> None:
    """1 reading/s of 20 ± 0.5 (no trend), raise 0.5/s over 60 s: two readings 1 s apart can differ by
    1.0 (a 'rate' of 1/s); judged only over at least 30 s, the noise is at most 1/30 per s."""
    r = rule(kind="rate_of_change", **{"raise": 0.5}, window_s=60)
    readings = [(T0 + i * NS, 20.0 + rng.uniform(-0.5, 0.5)) for i in range(120)]
    _, seen = run(r, readings)
    assert seen == []


def test_anomaly_fires_when_anomalies_persist_for_s_and_clears_after_the_window() -> None:
    r = rule(kind="anomaly", window_s=5, for_s=2)
    state, transitions = on_anomaly(r, MachineState(), T0, 40.0)
    assert [t.state for t in transitions] == [PENDING]
    state, transitions = on_tick(r, state, T0 + 2 * NS)
    assert [t.state for t in transitions] == [FIRING]
    state, transitions = on_tick(r, state, T0 + 5 * NS - 1)
    assert transitions == []
    state, transitions = on_tick(r, state, T0 + 5 * NS)
    assert [t.state for t in transitions] == [RESOLVED]
    assert on_reading(r, state, T0 + 8 * NS, 1.0, T0 + 8 * NS) == (state, [])


@given(level_rule(), st.lists(st.tuples(gaps_ns, values), max_size=20))
def test_state_survives_a_round_trip_through_json(r: Rule, steps: list) -> None:
    state, _ = run(r, timeline([g for g, _ in steps], [v for _, v in steps]))
    assert MachineState.from_dict(state.to_dict()) == state


def test_fingerprint_is_alertmanagers_label_set_hash() -> None:
    """FNV-1a 64 as prometheus/common model/signature.go; the empty set hashes to the FNV offset basis.
    tests/integration/test_alerting.py compares with the fingerprint a real Alertmanager reports."""
    assert label_fingerprint({}) == "cbf29ce484222325"
    assert fingerprint("a", "d", "d:v") == label_fingerprint(
        {"device": "d", "alertname": "a", "datastream": "d:v"}
    )
    assert fingerprint("a", "d", "d:v") != fingerprint("a", "d", "d:w")
    assert fingerprint("a", "d", "d:v") != fingerprint("a", "dd", ":v")


def test_rules_resolve_per_property_with_thing_and_datastream_overrides() -> None:
    config = parse_config(
        {
            "alerting": {
                "rules": {
                    "hot": {
                        "observed_property": "temperature",
                        "kind": "above",
                        "raise": 35,
                        "clear": 33,
                        "things": {"nucleo": {"raise": 40, "clear": 38}},
                        "datastreams": {
                            "nucleo-1:wall1_temperature": {"enabled": False},
                            "sim-2:temperature": {"severity": "critical"},
                        },
                    }
                }
            }
        },
        {},
    )
    rules = RuleSet(config.alerting, TwinModel(config.model))
    assert rules.for_stream("nucleo-1", "ambient_temperature")[0][1].raise_ == 40
    assert rules.for_stream("nucleo-1", "wall1_temperature") == ()
    assert rules.for_stream("nucleo-1", "ambient_humidity") == ()
    assert rules.for_stream("sim-1", "temperature")[0][1].severity == "warning"
    assert rules.for_stream("sim-2", "temperature")[0][1].severity == "critical"
    assert rules.for_stream("unknown-device", "temperature") == ()


@pytest.mark.parametrize(
    ("rule_doc", "message"),
    [
        (
            {"observed_property": "radiation", "kind": "above", "raise": 1},
            "alerting.rules.r.observed_property",
        ),
        (
            {"observed_property": "noise", "kind": "above", "raise": 1, "things": {"bus": {}}},
            "alerting.rules.r.things.bus",
        ),
        (
            {
                "observed_property": "noise",
                "kind": "above",
                "raise": 1,
                "datastreams": {"sim-1:temperature": {}},
            },
            "alerting.rules.r.datastreams.sim-1:temperature: observes 'temperature', not 'noise'",
        ),
        (
            {"observed_property": "noise", "kind": "above", "raise": 60, "clear": 70},
            "clear: 70.0 is above raise 60.0",
        ),
        (
            {"observed_property": "noise", "kind": "below", "raise": 60, "clear": 50},
            "clear: 50.0 is below raise 60.0",
        ),
        ({"observed_property": "noise", "kind": "above"}, "needs a finite raise level"),
        ({"observed_property": "temperature", "kind": "rate_of_change", "raise": -0.5}, "raise: -0.5 < 0"),
        (
            {
                "observed_property": "pm2_5",
                "kind": "above",
                "raise": 25,
                "things": {"greensboro": {"raise": 30}},
            },
            "alerting.rules.r.things.greensboro: model.things.greensboro has no datastream of 'pm2_5'",
        ),
    ],
)
def test_rule_errors_name_the_key(rule_doc: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"alerting": {"rules": {"r": rule_doc}}}, {})
    assert message in str(caught.value)
    assert "alerting.rules.r" in str(caught.value)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"mqtt_topic_template": "twin/+/alerts"}, "alerting: mqtt_topic_template: 'twin/+/alerts' needs"),
        ({"alertmanager": {"url": "alertmanager:9093"}}, "alerting.alertmanager.url"),
        ({"alertmanager": {"url": "http://am:9093/api/v2/alerts"}}, "alerting.alertmanager.url"),
        ({"alertmanager": {"labels": {"bad-name": "x"}}}, "alerting.alertmanager.labels.bad-name"),
        ({"alertmanager": {"labels": {"severity": "x"}}}, "alerting.alertmanager: labels: ['severity']"),
        ({"alertmanager": {"labels": {"__name__": "x"}}}, "alerting.alertmanager: labels: ['__name__']"),
        ({"topics": []}, "alerting.topics: List should have at least 1 item"),
        (
            {"topic": "twin.telemetry"},
            "alerting.topic: 'twin.telemetry' is also an input (kafka.telemetry_topic",
        ),
        (
            {"topics": ["a"], "state_topic": "a"},
            "alerting.state_topic: 'a' is also an input (alerting.topics)",
        ),
        (
            {"state_topic": "twin.anomalies"},
            "alerting.state_topic: 'twin.anomalies' is also an input (alerting.anomaly",
        ),
        ({"topic": "x", "state_topic": "x"}, "alerting.state_topic: 'x' is also alerting.topic"),
    ],
)
def test_alerting_settings_errors_name_the_key(section: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"alerting": section}, {})
    assert message in str(caught.value)


@settings(max_examples=50)
@given(st.floats(min_value=0, max_value=100), st.floats(min_value=0, max_value=100))
def test_ramp_is_a_trapezoid_back_to_zero(by: float, elapsed: float) -> None:
    from twinpipe.config.publisher import Ramp

    ramp = Ramp(sensor="temperature", by=by, start_s=5, up_s=10, hold_s=10, down_s=10)
    offset = ramp.offset(elapsed)
    assert 0 <= offset <= by
    if elapsed < 5 or elapsed >= 35:
        assert offset == 0
    if 15 <= elapsed <= 25:
        assert offset == by


def test_the_fast_replace_covers_every_field_of_the_state() -> None:
    from dataclasses import fields

    from alerting.rules import replace

    state = MachineState()
    for field in fields(MachineState):
        changed = replace(state, **{field.name: "x"})
        assert getattr(changed, field.name) == "x"
        assert all(
            getattr(changed, f.name) == getattr(state, f.name) for f in fields(MachineState) if f != field
        )
