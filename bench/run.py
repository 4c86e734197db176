"""`make bench`: every benchmark on real local servers, each figure beside its baselines measured in
the same run, repeated; results to bench/results/*.json and the table in docs/benchmarks.md."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bench import bridge_latency, bridge_throughput, end_to_end, footprint, ingestion_throughput
from bench.common import spread
from devstack.stack import LocalStack

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "benchmarks.md"


def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def save(name: str, result: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")


def repeated(name: str, run: Callable[[], dict], repeat: int, *figures: str) -> dict:
    """`run` done `repeat` times: every run, and min/median/max of each figure."""
    runs = [run() for _ in range(repeat)]
    row: dict[str, Any] = {"runs": runs} | {figure: spread([r[figure] for r in runs]) for figure in figures}
    print(f"  {name}: " + " ".join(f"{figure} {row[figure]}" for figure in figures), flush=True)
    return row


def bench_bridges(stack: LocalStack, workdir: Path, count: int, repeat: int) -> dict:
    rows = {}
    for name, bridge in bridge_throughput.BRIDGES.items():
        if not bridge_throughput.available(name):
            rows[name] = {"skipped": "kcat or confluent-kafka missing (make bench installs them)"}
            continue
        flood = partial(bridge_throughput.flood, stack, workdir, bridge, count)
        rows[name] = repeated(name, flood, repeat, "msg_per_s")
    return rows


# The bridges whose added latency is measured, and the rates.
LATENCY_BRIDGES = [
    "twinpipe bridge (kafka-python producer, the default)",
    "twinpipe bridge (confluent-kafka producer)",
    "C pipeline (baseline)",
]
LATENCY_RATES = (1000, 3000)


def bench_bridge_latency(stack: LocalStack, workdir: Path, repeat: int) -> dict:
    rows = {}
    for name in LATENCY_BRIDGES:
        if not bridge_throughput.available(name):
            continue
        for rate in LATENCY_RATES:
            paced = partial(bridge_latency.paced, stack, workdir, bridge_throughput.BRIDGES[name], rate)
            rows[f"{name} at {rate} msg/s"] = repeated(f"{name} at {rate}", paced, repeat, "p50_ms", "p99_ms")
    return rows


def bench_ingestion(stack: LocalStack, workdir: Path, count: int, repeat: int) -> dict:
    variants = {
        "influx_ingestion": partial(ingestion_throughput.ingestion, stack, workdir, count),
        "direct to influxd, 5k batches (baseline)": partial(ingestion_throughput.direct, stack, count, False),
        "direct through the v2 shim, 5k batches (baseline)": partial(
            ingestion_throughput.direct, stack, count, True
        ),
    }
    return {name: repeated(name, run, repeat, "points_per_s") for name, run in variants.items()}


def bench_end_to_end(stack: LocalStack, workdir: Path, repeat: int) -> dict:
    rows = {}
    for rate in (100, 1000):
        for flush_interval_s in (1.0, 0.05):
            name = f"{rate} msg/s, ingestion.flush_interval_s {flush_interval_s}"
            run = partial(end_to_end.end_to_end, stack, workdir, rate, flush_interval_s)
            rows[name] = repeated(name, run, repeat, "p50_ms", "p99_ms")
    return rows


def section(title: str, columns: list[str], rows: list[list[object]], intro: str = "") -> list[str]:
    """A markdown section: a heading, an optional sentence, and a table."""
    lines = ["", f"## {title}", ""] + ([intro, ""] if intro else [])
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def spread_text(s: dict) -> str:
    digits = 1 if s["median"] < 1000 else 0
    return f"{s['median']:,.{digits}f} ({s['min']:,.{digits}f} – {s['max']:,.{digits}f})"


def bridge_row(name: str, row: dict) -> list[object]:
    if "skipped" in row:
        return [name, f"skipped: {row['skipped']}", "", ""]
    lost = sum(r["lost"] for r in row["runs"])
    duplicates = sum(r["duplicates"] for r in row["runs"])
    return [name, spread_text(row["msg_per_s"]), lost, duplicates]


def table(bridges: dict, ingestion: dict, latency: dict, stages: dict, command: str, info: dict) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`bench/run.py`); do not edit by hand. Figures are medians with",
        "(min – max) over the repetitions; every baseline ran in the same run on the same servers.",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, kernel {info['kernel']},"
        f" {info['date']}. Command: `{command}`.",
    ]
    lines += section(
        "Bridge throughput: MQTT QoS 1 → Kafka",
        ["bridge", "msg/s", "lost", "duplicates"],
        [bridge_row(name, row) for name, row in bridges.items()],
    )
    lines += section(
        "Ingestion throughput: Kafka → InfluxDB",
        ["writer", "points/s"],
        [[name, spread_text(row["points_per_s"])] for name, row in ingestion.items()],
    )
    lines += section(
        "End to end: board read → visible in an InfluxQL query",
        ["load", "p50 ms", "p99 ms"],
        [[name, spread_text(row["p50_ms"]), spread_text(row["p99_ms"])] for name, row in latency.items()],
        "Simulated boards through publisher, bridge and ingestion; InfluxDB polled every 10 ms.",
    )
    lines += section(
        "Footprint at 1,000 readings/s",
        ["stage", "peak RSS (MB)", "CPU (% of a core)"],
        [[name, row["rss_mb"], row["cpu_percent"]] for name, row in stages.items()],
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000, help="messages per bridge run")
    parser.add_argument("--points", type=int, default=100_000, help="points per ingestion run")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of each measurement")
    args = parser.parse_args(argv)
    command = "python -m bench.run " + " ".join(argv if argv is not None else sys.argv[1:])
    info = machine()
    workdir = Path(tempfile.mkdtemp(prefix="twinpipe-bench-"))
    with LocalStack(workdir / "servers") as stack:
        print("bridge throughput", flush=True)
        bridges = bench_bridges(stack, workdir, args.messages, args.repeat)
        save("bridge_throughput", {"machine": info, "command": command, "results": bridges})
        print("ingestion throughput", flush=True)
        ingestion = bench_ingestion(stack, workdir, args.points, args.repeat)
        save("ingestion_throughput", {"machine": info, "command": command, "results": ingestion})
        print("end to end", flush=True)
        latency = bench_end_to_end(stack, workdir, args.repeat)
        save("end_to_end", {"machine": info, "command": command, "results": latency})
        print("footprint", flush=True)
        stages = footprint.footprint(stack, workdir, rate=1000)
        save("footprint", {"machine": info, "command": command, "results": stages})
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(table(bridges, ingestion, latency, stages, command.strip(), info))
    print(f"results in {RESULTS}, table in {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
