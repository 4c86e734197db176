"""What the alerting stage lets its rules judge (alerting.screen), and what a bad reading can no longer
do to a datastream's event-time clock: one reading a year ahead, 1e308 °C, a device of no thing."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from alerting.engine import Engine
from alerting.rules import NS, MachineState, window_rate
from alerting.ruleset import RuleSet
from alerting.screen import Screen
from twinpipe.config import parse_config
from twinpipe.model import TwinModel

T0 = 1_764_547_200 * NS
SOURCE = ("twin.telemetry", 0)
YEAR_NS = 366 * 86400 * NS
RULES = {
    "hot": {"observed_property": "temperature", "kind": "above", "raise": 35, "clear": 33},
    "cold": {"observed_property": "temperature", "kind": "below", "raise": 2, "clear": 4},
    "steep": {"observed_property": "temperature", "kind": "rate_of_change", "raise": 2, "window_s": 5},
}


def parts() -> tuple[Engine, Screen]:
    config = parse_config({"alerting": {"rules": RULES}}, {})
    model = TwinModel(config.model)
    return Engine(RuleSet(config.alerting, model)), Screen(model, config.ingestion)


def judge(engine: Engine, screen: Screen, device: str, values: dict, time_ns: int, arrival_ns: int) -> list:
    screened = screen.reading(device, values, time_ns, arrival_ns)
    if screened.skipped is not None:
        return [screened.skipped]
    alerts = engine.reading(SOURCE, device, screened.values, time_ns, arrival_ns)
    return [(a.event["rule"], a.event["state"], a.event["value"]) for a in alerts]


@given(st.integers(301 * NS, 100 * YEAR_NS))
def test_a_reading_from_the_future_is_skipped_and_does_not_blind_the_datastream(ahead_ns: int) -> None:
    engine, screen = parts()
    assert judge(engine, screen, "sim-1", {"temperature": 20.0}, T0 + ahead_ns, T0) == ["implausible_time"]
    found = judge(engine, screen, "sim-1", {"temperature": 40.0}, T0 + NS, T0 + NS)
    assert ("hot", "firing", 40.0) in found


@given(st.integers(0, 300 * NS))
def test_a_reading_within_the_clock_skew_allowed_is_judged(ahead_ns: int) -> None:
    engine, screen = parts()
    assert ("hot", "firing", 40.0) in judge(engine, screen, "sim-1", {"temperature": 40.0}, T0 + ahead_ns, T0)


def test_a_state_blinded_by_a_future_reading_before_this_fix_starts_afresh_on_load() -> None:
    engine, _ = parts()
    blind = MachineState(last_input_ns=T0 + YEAR_NS, value=20.0).to_dict()
    document = {"v": 1, "topic": SOURCE[0], "device": "sim-1", "machines": {"temperature|hot": blind}}
    engine.load(SOURCE, {"sim-1": document}, T0, latest_ns=T0 + 300 * NS)
    alerts = engine.reading(SOURCE, "sim-1", {"temperature": 40.0}, T0 + NS, T0 + NS)
    assert [(a.event["rule"], a.event["state"]) for a in alerts] == [("hot", "firing")]


@given(st.floats(allow_nan=False, allow_infinity=False).filter(lambda v: not -40 <= v <= 125))
def test_values_outside_the_model_range_are_not_judged_and_the_others_are(value: float) -> None:
    engine, screen = parts()
    screened = screen.reading("sim-1", {"temperature": value, "humidity": 50.0}, T0, T0)
    assert screened.skipped is None and screened.out_of_range == ["temperature"]
    assert screened.values == {"humidity": 50.0}
    assert judge(engine, screen, "sim-1", {"temperature": value}, T0, T0) == []
    assert judge(engine, screen, "sim-1", {"temperature": 125.0}, T0 + NS, T0 + NS)[0][:2] == (
        "hot",
        "firing",
    )


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=2, max_size=2))
def test_a_rate_is_finite_or_absent_and_events_carry_no_non_finite_number(values: list[float]) -> None:
    rate = window_rate(((T0, values[0]), (T0 + 1, values[1])))
    assert rate is None or math.isfinite(rate)
    engine, _ = parts()  # the engine alone: no range screening in front of it
    for i, value in enumerate(values):
        for alert in engine.reading(SOURCE, "sim-1", {"temperature": value}, T0 + i * NS, T0):
            assert alert.event["value"] is None or math.isfinite(alert.event["value"])


def test_a_device_of_no_thing_is_skipped_as_unmodelled() -> None:
    _, screen = parts()
    screened = screen.reading("unknown-board-7", {"temperature": 40.0}, T0, T0)
    assert screened.skipped == "unmodelled" and "unknown-board-7" in screened.problem
