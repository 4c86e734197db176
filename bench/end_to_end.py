"""Benchmark 4, end to end: a reading's event time (board read) → the moment an InfluxQL query
first returns it, at fixed rates from simulated boards through publisher, bridge and ingestion.
InfluxDB is queried every 10 ms for the last second's points; a point is stamped when the first
query that returns it has finished, so the resolution is the query's own time plus 10 ms."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from bench.common import simulated_pipeline
from devstack.stack import LocalStack
from latency_probe.recorder import quantiles

POLL_S = 0.01
LOOKBACK_S = 1.0


def end_to_end(
    stack: LocalStack,
    workdir: Path,
    rate: int,
    overrides: dict,
    seconds: float = 15,
    warmup_s: float = 5,
    devices: int = 10,
) -> dict:
    """Readings from the first `warmup_s` are not counted: they include the consumer group's join.
    `overrides` go on top of the default config (e.g. another ingestion.flush_interval_s)."""
    with simulated_pipeline(stack, workdir, "e2e", rate, overrides, devices) as (_stages, bucket):
        delays: list[float] = []
        seen: set[tuple[str, int]] = set()
        newest = time.time_ns()
        # Points can appear after newer ones (the stages' delays vary): look back well past that
        # spread, but no further, since the query's own time is the measurement's resolution.
        lookback_ns = int(LOOKBACK_S * 1e9)
        query_s: list[float] = []
        counted_from = time.time_ns() + int(warmup_s * 1e9)
        deadline = time.monotonic() + warmup_s + seconds
        while time.monotonic() < deadline:
            query = f'SELECT "seq", "device" FROM "telemetry" WHERE time > {newest - lookback_ns}'
            started = time.perf_counter()
            rows = stack.influxd.rows(query, bucket)
            seen_ns = time.time_ns()
            query_s.append(time.perf_counter() - started)
            for row in rows:
                key = (row["device"], row["seq"])
                if key not in seen:
                    seen.add(key)
                    if row["time"] >= counted_from:
                        delays.append((seen_ns - row["time"]) / 1e9)
                newest = max(newest, row["time"])
            time.sleep(POLL_S)
    if not delays:
        return {"rate": rate, "points": 0}
    p50, p99 = quantiles(delays, (0.5, 0.99))
    return {
        "rate": rate,
        "points": len(delays),
        "p50_ms": round(p50 * 1e3, 1),
        "p99_ms": round(p99 * 1e3, 1),
        "query_ms": round(statistics.median(query_s) * 1e3, 1),  # each delay is late by up to this + POLL_S
    }
