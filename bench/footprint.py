"""Benchmark 5, footprint: resident memory and CPU of each stage with simulated boards at a fixed
total rate (default 1,000 readings/s), read from /proc over a measuring window after a warm-up."""

from __future__ import annotations

import os
import time
from pathlib import Path

from bench.common import cpu_seconds, simulated_pipeline
from devstack.process import poll
from devstack.stack import LocalStack

PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


def footprint(
    stack: LocalStack, workdir: Path, rate: int, warmup_s: float = 10, window_s: float = 20
) -> dict:
    with simulated_pipeline(stack, workdir, "fp", rate, also=("latency_probe",)) as (stages, bucket):
        poll(lambda: stack.influxd.point_count(bucket), bool, 60, "points flowing")
        time.sleep(warmup_s)
        pids = {name: stage.process.pid for name, stage in stages.items()}
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
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
                "cpu_percent": round(100 * (cpu_seconds(pid) - cpu_before[name]) / elapsed, 1),
            }
            for name, pid in pids.items()
        }
