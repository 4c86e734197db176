"""Benchmark 4, end to end: a reading's event time (board read) → the moment an InfluxQL query
first returns it, at fixed rates from simulated boards through publisher, bridge and ingestion.
InfluxDB is polled every 10 ms for points newer than the last seen, which is the resolution."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from devstack.process import free_port, poll, stage_ready
from devstack.stack import LocalStack, merged, write_config
from devstack.stages import StageProcess

POLL_S = 0.01


def end_to_end(
    stack: LocalStack,
    workdir: Path,
    rate: int,
    flush_interval_s: float,
    seconds: float = 15,
    warmup_s: float = 5,
    devices: int = 10,
) -> dict:
    """Readings from the first `warmup_s` are not counted: they include the consumer group's join."""
    run = uuid.uuid4().hex[:8]
    topic, bucket = f"e2e-{run}", f"eb{run}"
    stack.influx.add_bucket(bucket)
    settings = {
        "kafka": {"telemetry_topic": topic},
        "influxdb": {"bucket": bucket},
        "publisher": {
            "topic_template": f"e{run}/{{device}}/telemetry",
            "simulator": {"devices": devices, "rate_hz": rate / devices},
        },
        "bridge": {"routes": [{"mqtt_filter": f"e{run}/+/telemetry"}], "client_id": f"bridge-{run}"},
        "ingestion": {"group_id": f"e2e-{run}", "flush_interval_s": flush_interval_s},
        "health": {"port": 0},
        "logging": {"level": "WARNING"},
    }
    config = write_config(workdir / f"e2e-{run}.yaml", merged(stack.config(), settings))
    bridge_port, ingestion_port = free_port(), free_port()
    stages = [
        StageProcess(
            "influx_ingestion",
            config,
            workdir,
            env={**stack.env(), "TWINPIPE__HEALTH__PORT": str(ingestion_port)},
        ).start(),
        StageProcess(
            "mqtt_kafka_bridge", config, workdir, env={"TWINPIPE__HEALTH__PORT": str(bridge_port)}
        ).start(),
    ]
    try:
        poll(
            lambda: stage_ready(bridge_port) and stage_ready(ingestion_port),
            bool,
            60,
            "bridge and ingestion ready",
        )
        stages.append(StageProcess("publisher", config, workdir).start())
        delays: list[float] = []
        seen: set[tuple[str, int]] = set()
        newest = time.time_ns()
        # Partitions are written independently, so a point can appear after newer ones: look back.
        lookback_ns = int(max(3.0, 3 * flush_interval_s) * 1e9)
        counted_from = time.time_ns() + int(warmup_s * 1e9)
        deadline = time.monotonic() + warmup_s + seconds
        while time.monotonic() < deadline:
            query = f'SELECT "seq", "device" FROM "telemetry" WHERE time > {newest - lookback_ns}'
            rows = stack.influxd.rows(query, bucket)
            seen_ns = time.time_ns()
            for row in rows:
                key = (row["device"], row["seq"])
                if key not in seen:
                    seen.add(key)
                    if row["time"] >= counted_from:
                        delays.append((seen_ns - row["time"]) / 1e9)
                newest = max(newest, row["time"])
            time.sleep(POLL_S)
    finally:
        for stage in reversed(stages):
            stage.stop()
    delays.sort()
    if not delays:
        return {"rate": rate, "points": 0}
    return {
        "rate": rate,
        "flush_interval_s": flush_interval_s,
        "points": len(delays),
        "p50_ms": round(delays[len(delays) // 2] * 1e3, 1),
        "p99_ms": round(delays[min(len(delays) - 1, int(len(delays) * 0.99))] * 1e3, 1),
    }
