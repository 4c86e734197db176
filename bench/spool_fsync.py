"""Benchmark 6, the publisher spool's durability price: what one spool write costs (the readings of
one 20 ms interval at 1,000 readings/s, appended to a segment file) without fsync, as the spool does,
and with fsync, which would let spooled readings survive a power cut. Measured on the bench's work
directory, which should be on the disk the spool would use."""

from __future__ import annotations

import os
import time
from pathlib import Path

from bench.common import payloads
from latency_probe.recorder import quantiles

READINGS_PER_WRITE = 20  # 20 ms at 1,000 readings/s


def spool_writes(directory: Path, fsync: bool, writes: int = 500) -> dict:
    chunk = b"".join(line + b"\n" for line in payloads(READINGS_PER_WRITE))
    path = directory / f"spool-{'fsync' if fsync else 'write'}-{time.time_ns()}.jsonl"
    durations = []
    try:
        for _ in range(writes):
            started = time.perf_counter()
            with open(path, "ab") as handle:
                handle.write(chunk)
                if fsync:
                    handle.flush()
                    os.fsync(handle.fileno())
            durations.append(time.perf_counter() - started)
    finally:
        path.unlink(missing_ok=True)
    p50, p99 = quantiles(durations, (0.5, 0.99))
    return {"bytes_per_write": len(chunk), "writes": writes, "p50_us": round(p50 * 1e6, 1),
            "p99_us": round(p99 * 1e6, 1)}  # fmt: skip
