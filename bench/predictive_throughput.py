"""Benchmark 7, predictive_analysis cost at 1,000 series: model updates per second per core and
memory per series, beside the ingestion's cost for the same readings.

Measured in one process on CPU time (time.process_time: one core), the stage's own code path
(`Predictive.accumulate`: decode, anomaly judgement, resampling, learning, forecasting, the lines for
InfluxDB) with writes to a sink, so the figure is the stage's and not the servers'. The baseline is
the ingestion's per-record code path on the same envelopes (decode + PointMapper.to_line); what the
ingestion achieves end to end against the real servers is benchmark 3.

Two rates: one reading per step (every reading completes a step: the update cost) and 1 reading/s
into 60 s steps (the live case: 59 of 60 readings only accumulate). The 1,000 series use the live
defaults (60 s steps; horizons 1, 10, 60 steps) with a 1 h season so the models are warm after 61
steps; memory per series is also measured with the shipped daily season (1,440 steps) on a few series.
"""

from __future__ import annotations

import time
import tracemalloc

from kafka import TopicPartition

from influx_ingestion.points import PointMapper
from predictive_analysis.stage import Batch, Predictive
from twinpipe.config import parse_config
from twinpipe.envelope import Envelope, decode, encode

SERIES = 1000
STEP_NS = 60 * 10**9
START_NS = 1_700_000_000 * 10**9 // STEP_NS * STEP_NS


def _config(season_s: float):
    series = {"step_s": 60, "horizons_s": [60, 600, 3600], "season_s": season_s}
    return parse_config(
        {"predictive": {"series": series, "by_thing": {}, "decomposition": {"interval_s": 0}}}, {}
    )


def _envelopes(first_step: int, steps: int, per_step: int) -> list[bytes]:
    payloads = []
    for step in range(first_step, first_step + steps):
        for reading in range(per_step):
            time_ns = START_NS + step * STEP_NS + reading * STEP_NS // per_step
            for device in range(SERIES):
                value = 20.0 + 2.0 * ((step + device) % 60) / 60 + 0.01 * ((reading * 7 + device) % 13)
                payloads.append(
                    encode(Envelope(f"dev-{device}", "bench", step, time_ns, {"temperature": value}))
                )
    return payloads


def _feed(stage: Predictive, payloads: list[bytes]) -> float:
    """CPU seconds to accumulate `payloads` (lines are built, then dropped like a written batch)."""
    partition = TopicPartition("bench", 0)
    started = time.process_time()
    batch = Batch()
    for payload in payloads:
        stage.accumulate(batch, payload, partition)
        if len(batch.lines) > 5000:
            batch = Batch()
    return time.process_time() - started


def _ingestion_cpu(payloads: list[bytes]) -> float:
    mapper = PointMapper("telemetry", {}, {})
    started = time.process_time()
    for payload in payloads:
        mapper.to_line(decode(payload))
    return time.process_time() - started


def memory_per_series(season_s: float, steps: int, series: int) -> float:
    """Bytes allocated per warm series (tracemalloc), after `steps` steps of one reading each."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    stage = Predictive(_config(season_s), None, None, lambda lines: None, None)
    partition = TopicPartition("bench", 0)
    for step in range(steps):
        batch = Batch()
        for device in range(series):
            value = 20.0 + ((step + device) % 24) / 10
            payload = encode(
                Envelope(f"m-{device}", "bench", step, START_NS + step * STEP_NS, {"temperature": value})
            )
            stage.accumulate(batch, payload, partition)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return used / series


def predictive(measure_steps: int = 40) -> dict:
    stage = Predictive(_config(3600), None, None, lambda lines: None, None)
    warm = 70  # past the season (60 steps) and the 9 errors a 90 % interval needs
    _feed(stage, _envelopes(0, warm, 1))
    assert all(s.forecaster.ready() for s in stage.series.values())
    per_step = _envelopes(warm, measure_steps, 1)
    cpu = _feed(stage, per_step)
    live = _envelopes(warm + measure_steps, 2, 60)  # 1 reading/s: 2 steps × 60 readings per series
    live_cpu = _feed(stage, live)
    return {
        "series": SERIES,
        "updates_per_s_per_core": round(len(per_step) / cpu),
        "ingestion_records_per_s_per_core": round(len(per_step) / _ingestion_cpu(per_step)),
        "live_readings_per_s_per_core": round(len(live) / live_cpu),
        "ingestion_live_records_per_s_per_core": round(len(live) / _ingestion_cpu(live)),
        "kib_per_series_hourly_season": round(memory_per_series(3600, 80, 50) / 1024, 1),
        "kib_per_series_daily_season": round(memory_per_series(86400, 1460, 5) / 1024, 1),
    }


if __name__ == "__main__":
    print(predictive())
