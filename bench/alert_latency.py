"""Benchmark 7, alert latency: a reading's event time (board read) → its alert transition received
on MQTT (`twin/<device>/alerts`, QoS 1), at 1,000 readings/s from simulated boards through
publisher, bridge, Kafka and the alerting stage.

The rule (above 27 °C, clear under 23 °C, for_s 0) turns the simulator's noise (25 ± 2 °C) into a
transition every few readings, each stamped with the event time of the reading that caused it.
Beside it, measured in the same run: the same readings' event time → read from the telemetry topic
by a plain consumer (the floor of any stage reading Kafka), and per transition what the stage adds
over that consumer (alert received on MQTT − its reading read by the plain consumer). Alerts are
received by `mosquitto_sub` (C, its own process, `-F %U` stamps), so the reading consumer's Python
thread cannot delay their timestamps.

Beside it, what the same rule costs as a Prometheus alerting rule, computed from the shipped
prometheus/prometheus.yml: the reading waits for the next scrape (uniform over scrape_interval) and
then for the next rule evaluation (uniform over evaluation_interval), and the rule fires at that
evaluation; Alertmanager's own delays come on top in both cases. The sum of two uniform waits has
the quantiles given by `prometheus_quantile`, ignoring scrape and evaluation durations (≥ 0), so
the figure is a lower bound.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import yaml
from kafka import KafkaConsumer

from bench.common import delay_figures, simulated_pipeline
from devstack.stack import LocalStack
from twinpipe.config import KafkaConfig
from twinpipe.envelope import decode

ROOT = Path(__file__).resolve().parents[1]
RULE = {"observed_property": "temperature", "kind": "above", "raise": 27.0, "clear": 23.0, "for_s": 0.0}


def _seconds(text: str) -> float:
    units = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    for suffix in ("ms", "s", "m", "h"):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * units[suffix]
    raise ValueError(f"not a Prometheus duration: {text!r}")


def prometheus_intervals(path: Path = ROOT / "prometheus" / "prometheus.yml") -> tuple[float, float]:
    """(scrape_interval, evaluation_interval) in s from a prometheus.yml's global section."""
    settings = yaml.safe_load(path.read_text()).get("global", {})
    return _seconds(settings.get("scrape_interval", "1m")), _seconds(
        settings.get("evaluation_interval", "1m")
    )


def prometheus_quantile(q: float, scrape_s: float, evaluation_s: float) -> float:
    """The q-quantile of U(0, scrape_s) + U(0, evaluation_s) (a trapezoidal distribution), in s."""
    a, b = sorted((scrape_s, evaluation_s))
    if a == 0:
        return q * b
    if q <= a / (2 * b):
        return math.sqrt(2 * a * b * q)
    if q <= 1 - a / (2 * b):
        return b * q + a / 2
    return a + b - math.sqrt(2 * a * b * (1 - q))


class TelemetryTail:
    """The floor any Kafka consumer stage starts from: event time → the telemetry record read by a
    plain consumer with the stages' fetch wait (kafka.fetch_max_wait_ms), in the same run."""

    def __init__(self, bootstrap: str, topic: str, fetch_max_wait_ms: int) -> None:
        self.stamps: list[tuple[int, int]] = []
        self.read_at: dict[tuple[str, int], int] = {}  # (device, event time) → read (ns)
        self._stop = threading.Event()
        self._consumer = KafkaConsumer(
            topic,
            bootstrap_servers=[bootstrap],
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_wait_ms=fetch_max_wait_ms,
        )
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for records in self._consumer.poll(timeout_ms=100).values():
                now = time.time_ns()
                for record in records:
                    envelope = decode(record.value)
                    self.stamps.append((envelope.time_ns, now))
                    self.read_at[(envelope.device, envelope.time_ns)] = now

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()


class AlertListener:
    """mosquitto_sub stamping every alert transition as it arrives (`%U`: Unix time with ns);
    `stamps`: (event time, received, device) once closed."""

    def __init__(self, port: int, topic_filter: str, path: Path) -> None:
        self.stamps: list[tuple[int, int, str]] = []
        self._path = path
        self._out = open(path, "wb")  # noqa: SIM115 - owned by the child until close()
        command = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", topic_filter]
        self._process = subprocess.Popen([*command, "-F", "%U %p"], stdout=self._out)

    def close(self) -> None:
        self._process.terminate()
        self._process.wait(10)
        self._out.close()
        for line in self._path.read_text().splitlines():
            stamp, _, payload = line.partition(" ")
            seconds, _, fraction = stamp.partition(".")
            event = json.loads(payload)
            received = int(seconds) * 1_000_000_000 + int(fraction.ljust(9, "0")[:9])
            self.stamps.append((event["time_ns"], received, event["device"]))


def alert_latency(
    stack: LocalStack, workdir: Path, rate: int = 1000, seconds: float = 20, warmup_s: float = 5
) -> dict:
    """The boards start once the bridge and the alerting stage are ready (/readyz: subscribed,
    partitions assigned); transitions of the first `warmup_s` are not counted."""
    run = uuid.uuid4().hex[:8]
    name = "alert"
    overrides = {
        "alerting": {
            "group_id": f"alerting-{run}",
            "anomaly_topic": None,
            "topic": f"alerts-{run}",
            "state_topic": f"alert-state-{run}",
            "mqtt_topic_template": f"a{run}/{{device}}/alerts",
            "start_from": "earliest",
            "rules": {"warm": RULE},
        },
        "publisher": {
            "simulator": {
                "sensors": {  # every datastream model.things.simulated declares (check-config)
                    "temperature": {"mean": 25.0, "stddev": 2.0, "drift": 0.0},
                    "humidity": {"mean": 50.0, "stddev": 0.0, "drift": 0.0},
                    "pressure": {"mean": 1013.0, "stddev": 0.0, "drift": 0.0},
                }
            }
        },
    }
    overrides["kafka"] = {"telemetry_topic": f"alert-telemetry-{run}"}
    listener = AlertListener(stack.mosquitto.port, f"a{run}/+/alerts", workdir / f"alerts-{run}.txt")
    tail = TelemetryTail(stack.kafka.bootstrap, f"alert-telemetry-{run}", KafkaConfig().fetch_max_wait_ms)
    try:
        started = time.time_ns()
        first = ("mqtt_kafka_bridge", "alerting")  # no ingestion: InfluxDB is not on this path
        with simulated_pipeline(stack, workdir, name, rate, overrides, devices=10, first=first):
            time.sleep(warmup_s + seconds)  # the load runs for a fixed time; nothing to wait for
    finally:
        listener.close()
        tail.close()
    counted_from = started + int(warmup_s * 1e9)
    delays = [(received - event) / 1e9 for event, received, _ in listener.stamps if event >= counted_from]
    floor = [(received - event) / 1e9 for event, received in tail.stamps if event >= counted_from]
    # Per transition: received on MQTT − the same reading read from Kafka by the plain consumer.
    added = [
        (received - tail.read_at[(device, event)]) / 1e9
        for event, received, device in listener.stamps
        if event >= counted_from and (device, event) in tail.read_at
    ]
    scrape_s, evaluation_s = prometheus_intervals()
    result = {
        "rate": rate,
        "transitions": len(delays),
        "prometheus_scrape_s": scrape_s,
        "prometheus_evaluation_s": evaluation_s,
        "prometheus_p50_ms": round(prometheus_quantile(0.5, scrape_s, evaluation_s) * 1e3, 1),
        "prometheus_p99_ms": round(prometheus_quantile(0.99, scrape_s, evaluation_s) * 1e3, 1),
    }
    result |= delay_figures(floor, "kafka_read_", with_max=False)
    result |= delay_figures(added, "added_", with_max=False)
    result |= delay_figures(delays)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.alert_latency", description=__doc__)
    parser.add_argument("--rate", type=int, default=1000, help="readings per second in all (10 boards)")
    parser.add_argument("--seconds", type=float, default=20, help="measured seconds after the warm-up")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="twinpipe-bench-"))
    with LocalStack(workdir / "servers") as stack:
        print(json.dumps(alert_latency(stack, workdir, args.rate, args.seconds), indent=2))


if __name__ == "__main__":
    main()
