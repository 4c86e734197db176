"""Proof on real data: a pvlib TMY3 station year replayed at speed 0 through the whole local pipeline
(publisher replay → Mosquitto → bridge → Kafka → ingestion → InfluxDB, and predictive_analysis on
the same topic), then, per value and horizon, read back from InfluxDB: the MAE of the model, of
persistence and of seasonal naive (as the stage issued them), of the seed's approach (a linear
regression on a trailing window, fitted here offline at every issue time), and the observed coverage
of the intervals.

    .venv/bin/python -m bench.forecast_accuracy [--recording recordings/greensboro-tmy3.csv]

Every forecast the stage made is scored, from the first (the model forecasts once it has learned a
season and a step); `--skip-days` leaves the first days out as well.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from devstack.process import free_port, poll, stage_metric, stage_ready
from devstack.stack import BUCKET, LocalStack, merged, write_config
from devstack.stages import StageProcess

ROOT = Path(__file__).resolve().parents[1]
STEP_NS = 3600 * 10**9
VALUES = ("temperature", "humidity", "pressure")


def linear_regression(actual: dict[int, float], issued_step: int, horizon: int, window: int) -> float | None:
    """The seed's Predictive_Analysis approach: least squares y = a + b·t over the `window` steps up
    to the issue step, extrapolated `horizon` steps ahead."""
    steps = [s for s in range(issued_step - window + 1, issued_step + 1) if s in actual]
    if len(steps) < window // 2:
        return None
    slope, intercept = np.polyfit(steps, [actual[s] for s in steps], 1)
    return float(intercept + slope * (issued_step + horizon))


def score(stack: LocalStack, device: str, coverage: float, window: int, skip_days: float) -> list[dict]:
    rows = stack.influxd.rows(
        f'SELECT {", ".join(VALUES)} FROM "telemetry" WHERE "device" = \'{device}\'', BUCKET
    )
    actual = {
        value: {row["time"] // STEP_NS: row[value] for row in rows if row[value] is not None}
        for value in VALUES
    }
    first_step = min(actual["temperature"])
    forecasts = stack.influxd.query(
        'SELECT "forecast", "lower", "upper", "persistence", "seasonal_naive", "issued" FROM "twin_forecast"'
        f' WHERE "device" = \'{device}\' GROUP BY "value", "horizon"',
        BUCKET,
    )
    errors: dict[tuple[str, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    held: dict[tuple[str, int], list[bool]] = defaultdict(list)
    for series in forecasts:
        value, horizon = series["tags"]["value"], int(float(series["tags"]["horizon"])) // 3600
        columns = series["columns"]
        for row in series["values"]:
            point = dict(zip(columns, row, strict=True))
            target = point["time"] // STEP_NS
            issued = point["issued"] // STEP_NS
            if target not in actual[value] or issued - first_step < skip_days * 24:
                continue
            y = actual[value][target]
            key = (value, horizon)
            seed = linear_regression(actual[value], issued, horizon, window)
            if seed is None:
                continue
            for name, forecast in (
                ("model", point["forecast"]),
                ("persistence", point["persistence"]),
                ("seasonal_naive", point["seasonal_naive"]),
                ("linear_regression", seed),
            ):
                errors[key][name].append(abs(y - forecast))
            if point["lower"] is not None:
                held[key].append(point["lower"] <= y <= point["upper"])
    table = []
    for (value, horizon), by_model in sorted(errors.items()):
        row = {"value": value, "horizon_h": horizon, "n": len(by_model["model"])}
        row |= {name: float(np.mean(e)) for name, e in by_model.items()}
        intervals = held[value, horizon]
        row["coverage"] = float(np.mean(intervals)) if intervals else None
        row["intervals"] = len(intervals)
        table.append(row)
    return table


def markdown(table: list[dict], device: str, nominal: float) -> str:
    lines = [
        f"{device}: MAE per horizon (unit of the value); coverage of the {nominal:.0%} intervals",
        "",
        "| value | horizon | forecasts | model (SNARIMAX) | persistence | seasonal naive | linear regression"
        " (seed, 24 h window) | coverage |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in table:
        best = min(("model", "persistence", "seasonal_naive", "linear_regression"), key=lambda k: row[k])
        cells = [
            f"**{row[k]:.3f}**" if k == best else f"{row[k]:.3f}"
            for k in ("model", "persistence", "seasonal_naive", "linear_regression")
        ]
        coverage = f"{row['coverage']:.1%}" if row["coverage"] is not None else "—"
        lines.append(
            f"| {row['value']} | {row['horizon_h']} h | {row['n']} | {' | '.join(cells)} | {coverage} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.forecast_accuracy", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--recording", type=Path, default=ROOT / "recordings" / "greensboro-tmy3.csv")
    parser.add_argument(
        "--window", type=int, default=24, help="the linear regression's trailing window, steps"
    )
    parser.add_argument(
        "--skip-days", type=float, default=0.0, help="leave forecasts issued in the first days out"
    )
    parser.add_argument("--json", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    device = args.recording.name.split("-tmy3")[0]
    rows = sum(1 for _ in args.recording.open()) - 1
    workdir = Path(tempfile.mkdtemp(prefix="twinpipe-forecast-"))
    with LocalStack(workdir / "servers") as stack:
        config = write_config(
            workdir / "config.yaml",
            merged(
                stack.config(),
                {
                    "publisher": {
                        "source": "replay",
                        "replay": {"path": str(args.recording.resolve()), "speed": 0},
                    },
                    "health": {"port": 0},
                    # the decomposition is not scored here; off so it does not compete for the CPU
                    "predictive": {"decomposition": {"interval_s": 0}},
                },
            ),
        )
        ports = {
            name: free_port() for name in ("mqtt_kafka_bridge", "influx_ingestion", "predictive_analysis")
        }
        stages = [
            StageProcess(name, config, workdir, env={**stack.env(), "TWINPIPE__HEALTH__PORT": str(port)})
            for name, port in ports.items()
        ]
        started = time.monotonic()
        try:
            for stage in stages:
                stage.start()
            for name, port in ports.items():
                poll(lambda p=port: stage_ready(p), bool, 60, f"{name} ready")
            stages.append(StageProcess("publisher", config, workdir, env=stack.env()).start())
            updates = len(VALUES) * (rows - 1)  # the last step stays open: no later reading completes it
            poll(
                lambda: stage_metric(
                    ports["predictive_analysis"], "twinpipe_predictive_analysis_updates_total"
                ),
                lambda n: n >= updates,
                600,
                f"{updates} steps learned",
                interval_s=1,
            )
            poll(
                lambda: stack.influxd.point_count(BUCKET), lambda n: n >= rows, 120, f"{rows} readings stored"
            )
            # The last batch is written within predictive.flush_interval_s: wait until the count holds still.
            written = [-1.0]

            def settled() -> bool:
                now = stage_metric(
                    ports["predictive_analysis"], "twinpipe_predictive_analysis_points_written_total"
                )
                still, written[0] = now == written[0], now
                return still

            poll(settled, bool, 60, "the last forecasts written", interval_s=2)
            elapsed = time.monotonic() - started
            table = score(stack, device, 0.9, args.window, args.skip_days)
        finally:
            for stage in reversed(stages):
                stage.stop()
    print(markdown(table, device, 0.9))
    print(f"\n{rows} hourly readings replayed at speed 0 and forecast in {elapsed:.0f} s (logs: {workdir})")
    if args.json:
        args.json.write_text(json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
