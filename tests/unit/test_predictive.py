"""predictive_analysis's pure parts: resampling, the conformal quantile, error windows, coverage
bookkeeping, the baselines, pending forecasts, the anomaly event's shape and the config rules."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka import TopicPartition

from predictive_analysis import metrics
from predictive_analysis.conformal import Coverage, ErrorWindow, conformal_quantile, conformal_rank
from predictive_analysis.forecaster import MODEL, PERSISTENCE, SEASONAL_NAIVE, SeriesForecaster, envelope
from predictive_analysis.points import SeriesTags, anomaly_event, forecast_line
from predictive_analysis.resample import Resampler
from predictive_analysis.stage import Batch, Predictive
from publisher.simulator import SimulatedBoard
from twinpipe.config import Config, ConfigError, SeriesSettings, parse_config

errors = st.floats(min_value=0, max_value=1e6, allow_nan=False)
readings = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
coverages = st.floats(min_value=0.51, max_value=0.99)


@given(st.lists(errors, max_size=300), coverages)
def test_conformal_quantile_is_the_finite_sample_rank(scores: list[float], coverage: float) -> None:
    """Angelopoulos & Bates 2021: q̂ is the ⌈(n+1)(1−α)⌉-th smallest score, infinite beyond n."""
    q = conformal_quantile(scores, coverage)
    rank = math.ceil((len(scores) + 1) * coverage - 1e-9)
    if rank > len(scores):
        assert q is None
    else:
        assert q == sorted(scores)[rank - 1]
        # at least a `coverage` share of the calibration scores lie at or below q̂
        assert sum(s <= q for s in scores) >= coverage * len(scores)


def test_conformal_rank_at_ninety_percent() -> None:
    assert conformal_rank(9, 0.9) == 9  # the smallest window with a finite interval
    assert conformal_rank(8, 0.9) == 9
    assert conformal_quantile([1.0] * 8, 0.9) is None
    assert conformal_rank(99, 0.9) == 90


@given(st.lists(readings, max_size=400), st.integers(min_value=1, max_value=50), coverages)
def test_error_window_matches_recomputation_over_its_last_errors(
    values: list[float], size: int, coverage: float
) -> None:
    window = ErrorWindow(size)
    for value in values:
        window.add(value)
    kept = [abs(v) for v in values[-size:]]
    assert window.errors() == kept
    assert len(window) == len(kept)
    if kept:
        assert window.mae() == pytest.approx(sum(kept) / len(kept), rel=1e-6, abs=1e-6)
        assert window.rmse() == pytest.approx(
            math.sqrt(sum(k * k for k in kept) / len(kept)), rel=1e-6, abs=1e-3
        )
    else:
        assert window.mae() is None and window.rmse() is None
    assert window.quantile(coverage) == conformal_quantile(kept, coverage)


@given(st.lists(st.tuples(readings, readings, readings)))
def test_coverage_counts_what_held(intervals: list[tuple[float, float, float]]) -> None:
    coverage = Coverage()
    held = [coverage.judge(a, min(lo, hi), max(lo, hi)) for a, lo, hi in intervals]
    assert coverage.total == len(intervals)
    assert coverage.covered == sum(held)
    assert coverage.observed() == (sum(held) / len(held) if held else None)


@given(
    st.lists(st.tuples(st.integers(min_value=0, max_value=10**12), readings), min_size=1, max_size=200),
    st.integers(min_value=1, max_value=10**9),
)
def test_resampler_means_per_step_and_refuses_completed_steps(
    readings_at: list[tuple[int, float]], step_ns: int
) -> None:
    resampler = Resampler(step_ns)
    completed, accepted, late = [], [], 0
    for time_ns, value in readings_at:
        outcome = resampler.add(time_ns, value)
        if outcome is False:
            late += 1
            assert resampler.current is not None and time_ns // step_ns < resampler.current
            continue
        accepted.append((time_ns, value))
        if outcome is not None:
            completed.append(outcome)
    last = resampler.flush()
    if last is not None:
        completed.append(last)
    by_step: dict[int, list[float]] = {}
    for time_ns, value in accepted:
        by_step.setdefault(time_ns // step_ns, []).append(value)
    assert [c.step for c in completed] == sorted(by_step)  # every accepted step once, in order
    for c in completed:
        assert c.count == len(by_step[c.step])
        assert c.mean == pytest.approx(sum(by_step[c.step]) / c.count, rel=1e-9, abs=1e-6)
    assert late + len(accepted) == len(readings_at)
    assert resampler.add(0, 1.0) is (False if resampler.current and resampler.current > 0 else None)


def _settings(**override: object) -> SeriesSettings:
    base = {"step_s": 1, "horizons_s": [1, 3], "season_s": 4, "order": (1, 0, 0), "seasonal_order": (1, 1, 0)}
    return SeriesSettings(**(base | override))


@given(st.lists(readings, min_size=1, max_size=60))
@settings(max_examples=50, deadline=None)
def test_baselines_persistence_and_seasonal_naive(values: list[float]) -> None:
    forecaster = SeriesForecaster(_settings(), 0.9, 50)
    for step, value in enumerate(values):
        forecaster.observe(step, value)
        assert forecaster.seasonal_naive(1) == (values[step - 3] if step >= 3 else value)
        assert forecaster.seasonal_naive(3) == (values[step - 1] if step >= 3 else value)
        assert forecaster.seasonal_naive(5) == forecaster.seasonal_naive(1)  # h > m wraps by a season
    made = forecaster.pending[1]
    assert all(f.persistence == values[f.target_step - 1] for f in made)


def test_forecasts_are_judged_against_their_step_and_dropped_across_a_gap() -> None:
    forecaster = SeriesForecaster(_settings(), 0.9, 50)
    for step in range(40):
        judged, made = forecaster.observe(step, 20.0 + (step % 4))
    assert [f.horizon_steps for f in made] == [1, 3]
    assert made[0].lower is not None and made[0].lower <= made[0].value <= made[0].upper
    assert forecaster.pending_count() == 1 + 3  # one waiting for each step ahead
    assert len(forecaster.errors[3, MODEL]) == len(forecaster.errors[3, PERSISTENCE])
    assert len(forecaster.errors[3, SEASONAL_NAIVE]) == 40 - forecaster.season - 1 - 3
    assert forecaster.covered[1].total > 0
    judged, _ = forecaster.observe(45, 21.0)  # steps 40..44 never came
    assert judged == []
    assert forecaster.dropped == 4
    assert forecaster.drop_oldest(100) == forecaster.dropped - 4 and forecaster.pending_count() == 0


def test_a_constant_series_gets_exact_baselines_and_a_tight_interval() -> None:
    """A board reading 0.00 forever: every forecaster is exact and nothing is anomalous."""
    forecaster = SeriesForecaster(_settings(), 0.9, 50)
    for step in range(30):
        forecaster.observe(step, 0.0)
    assert forecaster.errors[1, PERSISTENCE].mae() == 0.0
    assert forecaster.errors[1, SEASONAL_NAIVE].mae() == 0.0
    assert forecaster.covered[1].observed() == 1.0


def test_anomaly_event_has_the_interface_shape() -> None:
    event = orjson.loads(
        anomaly_event(
            SeriesTags("sim-1", "temperature", "simulated", "temperature"),
            123,
            40.0,
            21.0,
            20.0,
            22.0,
            10.0,
            0.99,
            "snarimax",
        )
    )
    assert event == {
        "v": 1, "device": "sim-1", "datastream": "sim-1:temperature", "value_name": "temperature",
        "time_ns": 123, "value": 40.0, "forecast": 21.0, "lower": 20.0, "upper": 22.0,
        "horizon_s": 10.0, "coverage": 0.99, "model": "snarimax",
    }  # fmt: skip


def test_forecast_line_is_at_its_target_time_with_tags() -> None:
    forecaster = SeriesForecaster(_settings(), 0.9, 50)
    for step in range(30):
        _, made = forecaster.observe(step, float(step % 4))
    line = forecast_line("twin_forecast", SeriesTags("a b", "t", None, None), made[-1], 10**9, 3.0)
    assert line.startswith("twin_forecast,device=a\\ b,horizon=3,value=t forecast=")
    assert line.endswith(f" {32 * 10**9}")
    assert "lower=" in line and "upper=" in line and "issued=29000000000i" in line


def test_stage_judges_a_spike_as_an_anomaly_and_learns_it_clipped() -> None:
    """Readings at 1/s into 10 s steps, then one spike: one event, and the step's mean stays near."""
    config = parse_config(
        {
            "predictive": {
                "by_thing": {
                    "simulated": {"step_s": 10, "horizons_s": [10], "season_s": 0, "model": "holt_winters"}
                }
            }
        },
        {},
    )
    stage = Predictive(config, None, None, lambda lines: None, None)
    batch, partition = Batch(), TopicPartition("t", 0)
    start = 1_700_000_000 * 10**9

    def send(second: int, value: float) -> None:
        payload = {"v": 1, "device": "sim-1", "boot": "b", "seq": second, "time_ns": start + second * 10**9,
                   "values": {"temperature": value}}  # fmt: skip
        stage.accumulate(batch, orjson.dumps(payload), partition)

    for second in range(3000):
        send(second, 21.0 + 0.1 * ((second * 7) % 5))
    assert not batch.events
    send(3000, 80.0)
    assert len(batch.events) == 1
    event = orjson.loads(batch.events[0][1])
    assert event["value"] == 80.0 and event["upper"] < 80.0
    series = stage.series["sim-1", "temperature"]
    for second in range(3001, 3010):
        send(second, 21.2)
    send(3010, 21.2)  # completes the spiked step
    assert series.forecaster.history[-1] < 23.0, "the spike was clipped before it entered the mean"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            {"series": {"step_s": 60, "horizons_s": [90]}},
            "horizons_s: 90.0 s is not a whole number of step_s",
        ),
        ({"by_thing": {"x": {"season_s": 60}}}, "by_thing.x: "),
        ({"series": {"step_s": 1, "season_s": 86400}}, "season_s: 86400.0 s is 86400 steps"),
    ],
)
def test_config_errors_name_the_key_and_value(override: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"predictive": override}, {})
    assert any(message in error for error in caught.value.errors), caught.value.errors


def test_settings_cascade_property_then_thing() -> None:
    config = parse_config({"predictive": {"by_property": {"pressure": {"model": "holt_winters"}}}}, {})
    assert config.predictive.settings_for("pressure", "greensboro").model == "holt_winters"
    assert config.predictive.settings_for("pressure", "greensboro").step_s == 3600
    assert config.predictive.settings_for("temperature", None) == Config().predictive.series


def test_a_revoked_partition_takes_its_series_along() -> None:
    """A rebalance: the series of a revoked partition go (the new owner warms them up), others stay."""
    stage = Predictive(Config(), None, None, lambda lines: None, None)
    batch = Batch()
    for device, partition in (("sim-1", 0), ("sim-2", 1)):
        payload = {"v": 1, "device": device, "boot": "b", "seq": 0, "time_ns": 10**18, "values": {"t": 1.0}}
        stage.accumulate(batch, orjson.dumps(payload), TopicPartition("t", partition))
    stage.drop_partitions({TopicPartition("t", 0)})
    assert list(stage.series) == [("sim-2", "t")]


@given(
    st.lists(
        st.tuples(
            st.integers(min_value=-3, max_value=40),  # seconds since the last reading: late, repeated, gaps
            st.one_of(st.just(0.0), readings),  # a board reading 0.00, or anything finite
        ),
        min_size=1,
        max_size=300,
    )
)
@settings(max_examples=40, deadline=None)
def test_stage_takes_any_reading_sequence_and_keeps_its_bounds(steps: list[tuple[int, float]]) -> None:
    """Unplugged boards (gaps), re-delivered and late readings, 0.00 and extreme values: no error,
    steps learned in order, pending forecasts bounded, every line a point with a finite timestamp."""
    config = parse_config(
        {
            "predictive": {
                "max_pending": 5,
                "by_thing": {"simulated": {"step_s": 2, "horizons_s": [2, 6], "season_s": 8}},
            }
        },
        {},
    )
    lines: list[str] = []
    stage = Predictive(config, None, None, lines.extend, None)
    batch, partition, now = Batch(), TopicPartition("t", 0), 1_700_000_000
    for seq, (delta, value) in enumerate(steps):
        now += delta
        payload = {
            "v": 1,
            "device": "sim-1",
            "boot": "b",
            "seq": seq,
            "time_ns": now * 10**9,
            "values": {"t": value},
        }
        stage.accumulate(batch, orjson.dumps(payload), partition)
        series = stage.series["sim-1", "t"]
        assert series.forecaster.pending_count() <= 5
    for line in batch.lines:
        assert line.split(" ")[-1].isdigit() and line.startswith(
            ("twin_forecast,", "twin_forecast_accuracy,")
        )
    for event in batch.events:
        anomaly = orjson.loads(event[1])
        assert not anomaly["lower"] <= anomaly["value"] <= anomaly["upper"]


# --- findings of a new user (issue 13 follow-up) ---

SIMULATED = {"step_s": 10, "horizons_s": [10, 60, 300], "season_s": 0}


def _live_stage(**predictive: object) -> tuple[Predictive, Batch, Callable[[int, dict], None]]:
    """The stage fed like the simulator's sim-1: envelopes at 1/s, 10 s steps (the shipped config)."""
    config = parse_config({"predictive": predictive}, {})
    stage = Predictive(config, None, None, lambda lines: None, None)
    batch, partition, start = Batch(), TopicPartition("t", 0), 1_700_000_000 * 10**9

    def send(second: int, values: dict) -> None:
        payload = {"v": 1, "device": "sim-1", "boot": "b", "seq": second, "time_ns": start + second * 10**9,
                   "values": values}  # fmt: skip
        stage.accumulate(batch, orjson.dumps(payload), partition)

    return stage, batch, send


def _counter(counter) -> float:
    return counter._value.get()


@given(
    level=st.floats(min_value=-30, max_value=100),
    noise=st.sampled_from([0.0, 0.01, 0.2, 2.0]),
    walk=st.sampled_from([0.0, 0.05]),
    seed=st.integers(min_value=0, max_value=2**16),
)
@settings(max_examples=15, deadline=None)
def test_live_like_series_forecasts_stay_in_a_sane_envelope(
    level: float, noise: float, walk: float, seed: int
) -> None:
    """The shipped simulated settings on 10 min of 1 Hz input (a level, noise, a slow walk, constant):
    every forecast and bound stays within the temperature range and near the input (SNARIMAX had
    reached ±1e30 here), and no model fails."""
    rng = random.Random(seed)
    stage, batch, send = _live_stage()
    value, lines = level, []
    stage._write = lines.extend
    for second in range(600):
        value += rng.gauss(0, walk)
        send(second, {"temperature": round(value + rng.uniform(-noise, noise), 2)})
    forecaster = stage.series["sim-1", "temperature"].forecaster
    assert forecaster.settings.model == "holt_winters" and forecaster.model_failures == 0
    made = [f for waiting in forecaster.pending.values() for f in waiting]
    assert made, "it forecasts within minutes"
    spread = 10 * (noise + 3 * walk * 25) + 1.0
    for forecast in made:
        for bound in (forecast.value, forecast.lower, forecast.upper):
            assert bound is None or -40.0 <= bound <= 125.0
        assert abs(forecast.value - value) <= spread


def test_a_diverged_model_is_a_failure_starts_over_and_is_never_written() -> None:
    """A model whose forecast is not finite or leaves the envelope of the recent steps."""

    class Diverged:
        def learn_one(self, y: float) -> None:
            pass

        def forecast(self, horizon: int) -> list[float]:
            return [1e42] * horizon

    forecaster = SeriesForecaster(SeriesSettings(**SIMULATED), 0.9, 50, (-40.0, 125.0))
    for step in range(5):
        forecaster.observe(step, 20.0)
    forecaster.model = Diverged()
    forecaster.learned = 10_000  # a model that had time to converge
    _, made = forecaster.observe(5, 20.0)
    assert made == [] and forecaster.model_failures == 1 and not isinstance(forecaster.model, Diverged)
    forecaster.model, forecaster.learned = Diverged(), 3  # a young one is withheld, not failed
    forecaster.model.forecast = lambda horizon: [math.nan] * horizon  # ...unless not finite
    _, made = forecaster.observe(6, 20.0)
    assert made == [] and forecaster.model_failures == 2


@given(st.lists(st.floats(min_value=-1e6, max_value=1e6), min_size=1, max_size=50))
def test_the_envelope_contains_the_recent_values(recent: list[float]) -> None:
    low, high = envelope(recent, None)
    assert low <= min(recent) and max(recent) <= high


def test_forecasts_and_bounds_are_clipped_to_the_plausible_range() -> None:
    """Humidity at 99-100 %: no bound above 100 % nor below 0 %."""
    forecaster = SeriesForecaster(SeriesSettings(**SIMULATED, model="holt_winters"), 0.9, 50, (0.0, 100.0))
    for step in range(200):
        forecaster.observe(step, 100.0 - (step % 3) * 2.0)
    made = [f for waiting in forecaster.pending.values() for f in waiting]
    assert made and all(f.upper is not None for f in made)
    assert all(0.0 <= f.lower <= f.value <= f.upper <= 100.0 for f in made)
    assert any(f.upper == 100.0 for f in made)


def test_the_anomaly_interval_calibrates_on_real_errors_and_can_grow() -> None:
    """A series that becomes noisier: the window holds the unclipped errors, so q̂ grows to them and
    the anomaly rate falls back (with clipped errors, q̂ could never exceed itself)."""
    stage, batch, send = _live_stage()
    rng = random.Random(3)
    for second in range(1200):
        send(second, {"temperature": 20 + rng.uniform(-0.1, 0.1)})
    series = stage.series["sim-1", "temperature"]
    before = series.reading_errors.quantile(0.99)
    for second in range(1200, 3000):
        send(second, {"temperature": 20 + rng.uniform(-1.0, 1.0)})
    assert series.reading_errors.quantile(0.99) > 5 * before
    flagged = len(batch.events)
    for second in range(3000, 4000):
        send(second, {"temperature": 20 + rng.uniform(-1.0, 1.0)})
    assert len(batch.events) - flagged < 40, "about 1 % of 1000, not stuck high"


def test_a_level_shift_is_accepted_after_consecutive_anomalies() -> None:
    """20 ± 0.2 °C, then +10 °C: a few readings flagged, then the forecast follows (it crawled before)."""
    stage, batch, send = _live_stage()
    rng = random.Random(5)
    for second in range(1200):
        send(second, {"temperature": 20 + rng.uniform(-0.2, 0.2)})
    flagged = len(batch.events)
    for second in range(1200, 1500):
        send(second, {"temperature": 30 + rng.uniform(-0.2, 0.2)})
    assert len(batch.events) - flagged <= 30
    series = stage.series["sim-1", "temperature"]
    assert abs(series.forecaster.pending[1][-1].value - 30) < 1.0
    # a spike shorter than anomaly_accept_after is still clipped
    send(1500, {"temperature": 80.0})
    for second in range(1501, 1511):
        send(second, {"temperature": 30.0})
    assert series.forecaster.history[-1] < 33.0


def test_readings_outside_the_plausible_range_are_skipped_and_counted() -> None:
    stage, batch, send = _live_stage()
    for second in range(300):
        send(second, {"temperature": 20.0})
    skipped = _counter(metrics.OUT_OF_RANGE)
    send(300, {"temperature": 1e300})
    for second in range(301, 320):
        send(second, {"temperature": 20.0})
    assert _counter(metrics.OUT_OF_RANGE) == skipped + 1 and not batch.events
    assert max(stage.series["sim-1", "temperature"].forecaster.history) == 20.0


def test_a_reset_by_a_long_gap_counts_the_forecasts_it_drops() -> None:
    stage, _, send = _live_stage()
    for second in range(600):
        send(second, {"temperature": 20.0})
    pending = stage.series["sim-1", "temperature"].forecaster.pending_count()
    dropped, resets = _counter(metrics.DROPPED), _counter(metrics.RESETS)
    send(2600, {"temperature": 20.0})
    send(2610, {"temperature": 20.0})  # completes the step after a 2000 s gap: the series starts over
    assert _counter(metrics.RESETS) == resets + 1
    assert pending > 0 and _counter(metrics.DROPPED) == dropped + pending


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"by_property": {"temprature": {"step_s": 10}}}, "predictive.by_property.temprature: not in"),
        ({"by_thing": {"nosuch": {}}}, "predictive.by_thing.nosuch: not in model.things"),
        ({"topics": []}, "predictive.topics: "),
        (
            {"by_property": {"temperature": {"step_s": 7}}},
            "predictive: by_property.temperature: season_s: 86400.0 s is not a whole number of step_s",
        ),
    ],
)
def test_predictive_key_errors_are_one_line_naming_the_key(override: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"predictive": override}, {})
    assert any(message in error for error in caught.value.errors), caught.value.errors
    assert all("\n" not in error and "pydantic" not in error for error in caught.value.errors)


def test_the_simulated_board_is_forecast_without_divergence_with_the_shipped_config() -> None:
    """The publisher's own SimulatedBoard (config.yaml's sensors: noise, drift, outliers) at 1 Hz for
    10 min through the stage with the shipped config.yaml: no model fails, and every forecast stays
    within 5 standard deviations of the sensor's mean (SNARIMAX had reached ±1e30 on this input)."""
    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "config.yaml").read_text())
    config = parse_config(raw, {})
    simulator, now = config.publisher.simulator, [0.0]
    board = SimulatedBoard(simulator.sensors, simulator, random.Random(7), clock=lambda: now[0])
    stage = Predictive(config, None, None, lambda lines: None, None)
    batch, partition, start = Batch(), TopicPartition("t", 0), 1_700_000_000 * 10**9
    for second in range(600):
        now[0] = second
        payload = {"v": 1, "device": "sim-1", "boot": "b", "seq": second, "time_ns": start + second * 10**9,
                   "values": board.read()}  # fmt: skip
        stage.accumulate(batch, orjson.dumps(payload), partition)
    for (_, name), series in stage.series.items():
        sensor, forecaster = simulator.sensors[name], series.forecaster
        made = [f for waiting in forecaster.pending.values() for f in waiting]
        assert made and forecaster.model_failures == 0, name
        assert all(abs(f.value - sensor.mean) <= 5 * sensor.stddev for f in made), name
