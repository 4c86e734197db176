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

from bench import (
    alert_latency,
    bridge_latency,
    bridge_throughput,
    command_roundtrip,
    end_to_end,
    footprint,
    ingestion_throughput,
    predictive_throughput,
    spool_fsync,
)
from bench.common import spread
from devstack.stack import LocalStack

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "benchmarks.md"

BRIDGE_DEFAULT, BRIDGE_CONFLUENT = bridge_throughput.DEFAULT, bridge_throughput.CONFLUENT
NAIVE, C_PIPELINE = bridge_throughput.NAIVE, bridge_throughput.C_PIPELINE
INGESTION_DIRECT = "direct to influxd, 5k batches (baseline)"
# The bridges whose added latency is measured, and the rates.
LATENCY_BRIDGES = [BRIDGE_DEFAULT, BRIDGE_CONFLUENT, C_PIPELINE]
LATENCY_RATES = (1000, 3000)


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
        rows[name] = repeated(name, flood, repeat, "msg_per_s", "cpu_us_per_msg")
    return rows


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
        INGESTION_DIRECT: partial(ingestion_throughput.direct, stack, count, False),
        "direct through the v2 shim, 5k batches (baseline)": partial(
            ingestion_throughput.direct, stack, count, True
        ),
    }
    return {name: repeated(name, run, repeat, "points_per_s") for name, run in variants.items()}


# The end-to-end runs: the defaults, and the batching a user would choose for fewer, larger writes.
END_TO_END = {
    "100 msg/s, defaults": (100, {}),
    "1000 msg/s, defaults": (1000, {}),
    "1000 msg/s, ingestion.flush_interval_s 1.0": (1000, {"ingestion": {"flush_interval_s": 1.0}}),
}


def bench_end_to_end(stack: LocalStack, workdir: Path, repeat: int) -> dict:
    rows = {}
    for name, (rate, overrides) in END_TO_END.items():
        run = partial(end_to_end.end_to_end, stack, workdir, rate, overrides)
        rows[name] = repeated(name, run, repeat, "p50_ms", "p99_ms", "query_ms")
    return rows


def bench_alert_latency(stack: LocalStack, workdir: Path, repeat: int) -> dict:
    run = partial(alert_latency.alert_latency, stack, workdir, 1000)
    figures = ("p50_ms", "p99_ms", "kafka_read_p99_ms", "added_p50_ms", "added_p99_ms")
    return {"1000 readings/s": repeated("alerts at 1000", run, repeat, *figures)}


def bench_spool(workdir: Path, repeat: int) -> dict:
    variants = {"write (what the spool does)": False, "write + fsync (would survive a power cut)": True}
    return {
        name: repeated(name, partial(spool_fsync.spool_writes, workdir, fsync), repeat, "p50_us", "p99_us")
        for name, fsync in variants.items()
    }


def bench_commands(stack: LocalStack, workdir: Path, repeat: int) -> dict:
    run = partial(command_roundtrip.roundtrip, stack, workdir, 50)
    figures = ("api_p50_ms", "api_p99_ms", "p50_ms", "p99_ms", "telemetry_p50_ms", "telemetry_p99_ms")
    return {"50 commands, one at a time": repeated("commands", run, repeat, *figures)}


PREDICTIVE_FIGURES = (
    "updates_per_s_per_core",
    "ingestion_records_per_s_per_core",
    "live_readings_per_s_per_core",
    "ingestion_live_records_per_s_per_core",
    "kib_per_series_hourly_season",
    "kib_per_series_daily_season",
)


def bench_predictive(repeat: int) -> dict:
    return {
        "predictive_analysis, 1,000 series": repeated(
            "predictive", predictive_throughput.predictive, repeat, *PREDICTIVE_FIGURES
        )
    }


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
        return [name, f"skipped: {row['skipped']}", "", "", "", ""]
    lost = sum(r["lost"] for r in row["runs"])
    duplicates = sum(r["duplicates"] for r in row["runs"])
    splits = [r["delivered_per_replica"] for r in row["runs"] if len(r["delivered_per_replica"]) > 1]
    split = " ; ".join(" / ".join(f"{n:,}" for n in s) for s in splits)
    return [name, spread_text(row["msg_per_s"]), spread_text(row["cpu_us_per_msg"]), lost, duplicates, split]


def median(rows: dict, name: str, figure: str) -> float | None:
    row = rows.get(name, {})
    return row[figure]["median"] if figure in row else None


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}×" if a and b else "n/a"


def targets(r: dict) -> list[list[object]]:
    """The issue's targets beside what this run measured (medians)."""
    bridges, latency, ingestion = r["bridge_throughput"], r["bridge_latency"], r["ingestion_throughput"]
    default, fast = BRIDGE_DEFAULT, BRIDGE_CONFLUENT
    bridge, confluent = median(bridges, default, "msg_per_s"), median(bridges, fast, "msg_per_s")
    naive, c = median(bridges, NAIVE, "msg_per_s"), median(bridges, C_PIPELINE, "msg_per_s")
    cpu = {name: median(bridges, name, "cpu_us_per_msg") for name in (default, fast, NAIVE)}
    replica_rows = [row for name, row in bridges.items() if name.startswith("2 twinpipe") and "runs" in row]
    replica_faults = sum(run["lost"] + run["duplicates"] for row in replica_rows for run in row["runs"])
    split_ok = all(min(run["delivered_per_replica"]) > 0 for row in replica_rows for run in row["runs"])
    c_p99 = median(latency, f"{C_PIPELINE} at 1000 msg/s", "p99_ms")
    bridge_p99 = median(latency, f"{default} at 1000 msg/s", "p99_ms")
    points = median(ingestion, "influx_ingestion", "points_per_s")
    direct = median(ingestion, INGESTION_DIRECT, "points_per_s")
    e2e_p99 = median(r["end_to_end"], "1000 msg/s, defaults", "p99_ms")
    rss = max(row["rss_mb"] for row in r["footprint"].values())
    alerts = r["alert_latency"]["1000 readings/s"]
    alert_p99, prometheus_p99 = alerts["p99_ms"]["median"], alerts["runs"][0]["prometheus_p99_ms"]

    def met(ok: bool) -> str:
        return "met" if ok else "**missed**"

    return [
        ["bridge ≥ 8,000 msg/s per process (kafka-python)", f"{bridge:,.0f}", met(bridge >= 8000)],
        ["bridge ≥ 2× the naive bridge, per process", f"kafka-python {ratio(bridge, naive)}, confluent-kafka "
         f"{ratio(confluent, naive)}; CPU per message {cpu[default]} / {cpu[fast]} µs, naive {cpu[NAIVE]} µs",
         met(max(bridge, confluent or 0) >= 2 * naive)],
        ["ratio to the C pipeline (report)", f"kafka-python {ratio(bridge, c)}, confluent-kafka "
         f"{ratio(confluent, c)}", ""],
        ["2 replicas on a shared subscription: zero loss, zero duplicates, both busy",
         f"{replica_faults} lost or duplicated, split {'even' if split_ok else 'uneven'}",
         met(replica_faults == 0 and split_ok and bool(replica_rows))],
        ["bridge added latency p99 ≤ 10 ms at 1,000 msg/s (over the C pipeline)",
         f"{bridge_p99 - c_p99:+.1f} ms ({bridge_p99:.1f} vs {c_p99:.1f})" if bridge_p99 and c_p99 else "n/a",
         met(bool(bridge_p99 and c_p99) and bridge_p99 - c_p99 <= 10)],
        ["ingestion ≥ 50,000 points/s", f"{points:,.0f}", met(points >= 50_000)],
        ["ingestion ≥ 50 % of the direct bulk write", f"{100 * points / direct:.0f} %",
         met(points >= direct / 2)],
        ["end to end p99 ≤ 100 ms at 1,000 msg/s (defaults)", f"{e2e_p99:,.1f} ms", met(e2e_p99 <= 100)],
        ["every stage ≤ 80 MB RSS at 1,000 msg/s", f"largest {rss} MB", met(rss <= 80)],
        ["alert p99 ≤ 100 ms at 1,000 readings/s (event time → MQTT)",
         f"{alert_p99:,.1f} ms (a Prometheus rule: {prometheus_p99:,.0f} ms)", met(alert_p99 <= 100)],
    ]  # fmt: skip


def predictive_section(row: dict) -> list[str]:
    return section(
        "predictive_analysis at 1,000 series (CPU of one core, in process)",
        ["figure", "predictive_analysis", "ingestion, same records (baseline)"],
        [
            [
                "one reading per step: model updates/s",
                spread_text(row["updates_per_s_per_core"]),
                spread_text(row["ingestion_records_per_s_per_core"]),
            ],
            [
                "1 reading/s into 60 s steps: readings/s",
                spread_text(row["live_readings_per_s_per_core"]),
                spread_text(row["ingestion_live_records_per_s_per_core"]),
            ],
            [
                "memory per series, 1 h season (60 steps), KiB",
                spread_text(row["kib_per_series_hourly_season"]),
                "",
            ],
            [
                "memory per series, 1 day season (1,440 steps), KiB",
                spread_text(row["kib_per_series_daily_season"]),
                "",
            ],
        ],
        "bench/predictive_throughput.py: the stage's accumulate path (decode, anomaly check, resampling, "
        "SNARIMAX learn_one and forecast of 60 steps, conformal intervals, line building) against the "
        "ingestion's per-record path (decode, line building) on the same envelopes.",
    )


def table(r: dict, command: str, info: dict) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`bench/run.py`); do not edit by hand. Figures are medians with",
        "(min – max) over the repetitions; every baseline ran in the same run on the same servers.",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, kernel {info['kernel']},"
        f" {info['date']}. Command: `{command}`.",
    ]
    lines += section("Targets", ["target", "measured", ""], targets(r))
    lines += section(
        "Bridge throughput: MQTT QoS 1 → Kafka (acks=all)",
        ["bridge", "msg/s", "CPU µs per message", "lost", "duplicates", "delivered by each replica"],
        [bridge_row(name, row) for name, row in r["bridge_throughput"].items()],
        "A lean publisher floods the broker far above any bridge's speed; Kafka is read back to count. "
        "CPU is the bridge processes' user + system time (all threads, the C pipeline's two processes).",
    )
    lines += section(
        "Bridge latency: MQTT publish → readable from Kafka",
        ["bridge, rate", "p50 ms", "p99 ms", "lost"],
        [
            [
                name,
                spread_text(row["p50_ms"]),
                spread_text(row["p99_ms"]),
                sum(run["messages"] - run["received"] for run in row["runs"]),
            ]
            for name, row in r["bridge_latency"].items()
        ],  # fmt: skip
        "Includes the reading consumer's fetch (5 ms wait) and the producers' 5 ms linger; the broker "
        "cannot report append times, so the C pipeline, measured the same way, is the floor.",
    )
    lines += section(
        "Ingestion throughput: Kafka → InfluxDB",
        ["writer", "points/s"],
        [[name, spread_text(row["points_per_s"])] for name, row in r["ingestion_throughput"].items()],
    )
    lines += section(
        "End to end: board read → visible in an InfluxQL query",
        ["load", "p50 ms", "p99 ms", "query ms"],
        [
            [name, spread_text(row["p50_ms"]), spread_text(row["p99_ms"]), spread_text(row["query_ms"])]
            for name, row in r["end_to_end"].items()
        ],
        "Simulated boards through publisher, bridge and ingestion. InfluxDB is queried every 10 ms for "
        "the last second's points, and a point counts as visible when the first query returning it has "
        "finished: each delay is late by up to the query's time (last column) plus 10 ms.",
    )
    lines += section(
        "Command round trip: API PATCH → applied (long poll); produced to Kafka → the board's ACK in Kafka",
        [
            "run",
            "API p50 ms",
            "API p99 ms",
            "Kafka p50 ms",
            "Kafka p99 ms",
            "telemetry p50 ms",
            "telemetry p99 ms",
            "failed",
        ],
        [
            [
                name,
                spread_text(row["api_p50_ms"]),
                spread_text(row["api_p99_ms"]),
                spread_text(row["p50_ms"]),
                spread_text(row["p99_ms"]),
                spread_text(row["telemetry_p50_ms"]),
                spread_text(row["telemetry_p99_ms"]),
                sum(run["failed"] + run["api_not_applied"] for run in row["runs"]),
            ]
            for name, row in r.get("commands", {}).items()
        ],
        "Simulated boards (20 readings/s) through publisher and bridge with the downlink and the twin state "
        "stage on; one command at a time (bench/command_roundtrip.py). API: PATCH /things/sim-1/desired → "
        "`applied` returned by GET /commands/{id}?wait_s=&after=. Kafka: produced to the command topic → "
        "the `acknowledged` event read from the event topic. Telemetry: a reading's board read → readable "
        "from Kafka, for the readings of the same run.",
    )
    lines += section(
        "Alert latency: reading event time → alert transition on MQTT",
        [
            "load",
            "p50 ms",
            "p99 ms",
            "event time → read from Kafka, p99 ms",
            "added over that read, p50 / p99 ms",
            "a Prometheus rule, p50 / p99 ms",
        ],
        [
            [
                name,
                spread_text(row["p50_ms"]),
                spread_text(row["p99_ms"]),
                spread_text(row["kafka_read_p99_ms"]),
                f"{row['added_p50_ms']['median']:,.1f} / {row['added_p99_ms']['median']:,.1f}",
                f"{row['runs'][0]['prometheus_p50_ms']:,.0f} / {row['runs'][0]['prometheus_p99_ms']:,.0f}",
            ]
            for name, row in r.get("alert_latency", {}).items()
        ],
        "10 simulated boards through publisher, bridge, Kafka and the alerting stage, a rule the noise "
        "crosses often (bench/alert_latency.py). A plain Kafka consumer of the same readings gives the "
        "floor; the Prometheus figure is computed from prometheus/prometheus.yml (a wait for the next "
        "scrape plus one for the next evaluation, uniform), not measured.",
    )
    lines += section(
        "Footprint at 1,000 readings/s",
        ["stage", "peak RSS (MB)", "CPU (% of a core)"],
        [[name, row["rss_mb"], row["cpu_percent"]] for name, row in r["footprint"].items()],
    )
    lines += section(
        "Publisher spool: one write per 20 ms interval",
        ["write", "p50 µs", "p99 µs"],
        [[name, spread_text(row["p50_us"]), spread_text(row["p99_us"])] for name, row in r["spool"].items()],
        f"The readings of one interval at 1,000 readings/s ({spool_fsync.READINGS_PER_WRITE}), appended to a "
        "segment file in the bench's work directory.",
    )
    if "predictive" in r:
        lines += predictive_section(r["predictive"]["predictive_analysis, 1,000 series"])
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
    results: dict[str, dict] = {}
    with LocalStack(workdir / "servers") as stack:
        benchmarks: dict[str, Callable[[], dict]] = {
            "bridge_throughput": partial(bench_bridges, stack, workdir, args.messages, args.repeat),
            "bridge_latency": partial(bench_bridge_latency, stack, workdir, args.repeat),
            "ingestion_throughput": partial(bench_ingestion, stack, workdir, args.points, args.repeat),
            "end_to_end": partial(bench_end_to_end, stack, workdir, args.repeat),
            "footprint": partial(footprint.footprint, stack, workdir, rate=1000),
            "spool": partial(bench_spool, workdir, args.repeat),
            "alert_latency": partial(bench_alert_latency, stack, workdir, args.repeat),
            "commands": partial(bench_commands, stack, workdir, args.repeat),
            "predictive": partial(bench_predictive, args.repeat),
        }
        for name, benchmark in benchmarks.items():
            print(name, flush=True)
            results[name] = benchmark()
            save(name, {"machine": info, "command": command, "results": results[name]})
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(table(results, command.strip(), info))
    print(f"results in {RESULTS}, table in {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
