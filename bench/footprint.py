"""Benchmark 5, footprint: resident memory and CPU of each stage with simulated boards at a fixed
total rate (default 1,000 readings/s), read from /proc over a measuring window after a warm-up."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from devstack.process import free_port, poll, stage_ready
from devstack.stack import LocalStack, merged, write_config
from devstack.stages import StageProcess

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def _rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


def footprint(
    stack: LocalStack, workdir: Path, rate: int, warmup_s: float = 10, window_s: float = 20
) -> dict:
    run = uuid.uuid4().hex[:8]
    topic, bucket = f"fp-{run}", f"fb{run}"
    stack.influx.add_bucket(bucket)
    devices = 10
    settings = {
        "kafka": {"telemetry_topic": topic},
        "influxdb": {"bucket": bucket},
        "publisher": {
            "topic_template": f"f{run}/{{device}}/telemetry",
            "simulator": {"devices": devices, "rate_hz": rate / devices},
        },
        "bridge": {"routes": [{"mqtt_filter": f"f{run}/+/telemetry"}], "client_id": f"bridge-{run}"},
        "ingestion": {"group_id": f"fp-{run}"},
        "health": {"port": 0},
        "logging": {"level": "WARNING"},
    }
    config = write_config(workdir / f"footprint-{run}.yaml", merged(stack.config(), settings))
    bridge_port = free_port()
    stages = {
        "influx_ingestion": StageProcess("influx_ingestion", config, workdir, env=stack.env()).start(),
        "mqtt_kafka_bridge": StageProcess(
            "mqtt_kafka_bridge", config, workdir, env={"TWINPIPE__HEALTH__PORT": str(bridge_port)}
        ).start(),
    }
    poll(lambda: stage_ready(bridge_port), bool, 30, "the bridge subscribed")  # before the boards start
    stages["publisher"] = StageProcess("publisher", config, workdir).start()
    try:
        poll(
            lambda: stack.influxd.rows('SELECT count("seq") FROM "telemetry"', bucket),
            bool,
            60,
            "points flowing",
        )
        time.sleep(warmup_s)
        pids = {name: stage.process.pid for name, stage in stages.items()}
        cpu_before = {name: _cpu_seconds(pid) for name, pid in pids.items()}
        started = time.monotonic()
        peak = dict.fromkeys(pids, 0)
        while time.monotonic() - started < window_s:
            for name, pid in pids.items():
                peak[name] = max(peak[name], _rss_bytes(pid))
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        return {
            name: {
                "rss_mb": round(peak[name] / 2**20, 1),
                "cpu_percent": round(100 * (_cpu_seconds(pid) - cpu_before[name]) / elapsed, 1),
            }
            for name, pid in pids.items()
        }
    finally:
        for stage in stages.values():
            stage.stop()
