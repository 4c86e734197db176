"""The anomaly rate of the predictive stage on a TMY3 station year, per value and month, beside the
nominal rate (1 − predictive.anomaly_coverage). The stage's own logic (Predictive.accumulate) fed the
recording's rows as envelopes, in order, without servers: what the stage does in the pipeline
between Kafka and its batch.

    .venv/bin/python -m bench.anomaly_rate [--recording recordings/greensboro-tmy3.csv]
"""

from __future__ import annotations

import argparse
import csv
from collections import Counter
from datetime import datetime
from pathlib import Path

import orjson
import yaml
from kafka import TopicPartition

from predictive_analysis.stage import Batch, Predictive
from twinpipe.config import parse_config

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recording", type=Path, default=ROOT / "recordings" / "greensboro-tmy3.csv")
    args = parser.parse_args(argv)
    config = parse_config(yaml.safe_load((ROOT / "config.yaml").read_text()), {})
    stage = Predictive(config, None, None, lambda lines: None, None)
    batch, partition = Batch(), TopicPartition("telemetry", 0)
    judged: Counter[tuple[str, int]] = Counter()
    flagged: Counter[tuple[str, int]] = Counter()
    with args.recording.open() as rows:
        for seq, row in enumerate(csv.DictReader(rows)):
            when = datetime.fromisoformat(row.pop("time").replace("Z", "+00:00"))
            device = row.pop("device")
            values = {name: float(value) for name, value in row.items()}
            before = len(batch.events)
            payload = {"v": 1, "device": device, "boot": "bench", "seq": seq,
                       "time_ns": int(when.timestamp() * 1e9), "values": values}  # fmt: skip
            stage.accumulate(batch, orjson.dumps(payload), partition)
            for name in values:  # judged: its step had a 1-step forecast and a single-reading q̂
                series = stage.series[device, name]
                step = series.resampler.step_of(payload["time_ns"])
                if series.reading_q_step == step and series.reading_q is not None:
                    judged[name, when.month] += 1
            for _, event in batch.events[before:]:
                flagged[orjson.loads(event)["value_name"], when.month] += 1
    nominal = 1 - config.predictive.anomaly_coverage
    print(f"anomaly rate per value and month (nominal {nominal:.1%}), {args.recording.name}")
    for name in sorted({name for name, _ in judged}):
        months = [(m, flagged[name, m], judged[name, m]) for m in range(1, 13) if judged[name, m]]
        total_f, total_j = sum(f for _, f, _ in months), sum(j for _, _, j in months)
        cells = " ".join(f"{m:02d}:{f / j:.1%}" for m, f, j in months)
        print(f"{name:12s} year {total_f}/{total_j} = {total_f / total_j:.2%}  {cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
