"""What every benchmark shares: payloads, a simulated pipeline, counting what reached Kafka, and
min/median/max."""

from __future__ import annotations

import os
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from devstack.process import free_port, poll, stage_ready
from devstack.stack import LocalStack, merged, write_config
from devstack.stages import StageProcess
from latency_probe.recorder import quantiles
from twinpipe.envelope import Envelope, decode, encode


def delay_figures(delays_s: list[float], prefix: str = "", digits: int = 2, with_max: bool = True) -> dict:
    """p50 and p99 (and the maximum) of delays given in s, as `<prefix>p50_ms` … in ms rounded to
    `digits`; {} for no delays."""
    if not delays_s:
        return {}
    p50, p99 = quantiles(delays_s, (0.5, 0.99))
    figures = {f"{prefix}p50_ms": round(p50 * 1e3, digits), f"{prefix}p99_ms": round(p99 * 1e3, digits)}
    if with_max:
        figures[f"{prefix}max_ms"] = round(max(delays_s) * 1e3, digits)
    return figures


def payloads(count: int, devices: int = 10, boot: str = "bench") -> list[bytes]:
    """`count` distinct envelopes of about 150 bytes, round-robin over `devices`."""
    now = time.time_ns()
    return [
        encode(
            Envelope(
                f"dev-{i % devices}",
                boot,
                i // devices,
                now + i,
                {"temperature": 20.0 + (i % 100) / 10, "humidity": 55.5, "pressure": 1013.25},
            )
        )
        for i in range(count)
    ]


@dataclass
class Arrival:
    unique: int
    total: int
    last_timestamp_s: float  # the newest record's Kafka timestamp

    @property
    def duplicates(self) -> int:
        return self.total - self.unique


def read_from_start(
    bootstrap: str,
    topic: str,
    handle: Callable[[int, list[ConsumerRecord]], None],
    readings: Callable[[], int],
    expected: int,
    timeout_s: float,
    idle_s: float,
    poll_ms: int = 500,
    **settings: Any,
) -> KafkaConsumer:
    """Read `topic` from the beginning, handing each poll's records with their read time (ns) to
    `handle`, until `readings()` (distinct readings seen) reaches `expected`, or it did not grow for
    `idle_s` (a lossy pipeline never delivers them all), or the timeout. Returns the consumer, still
    open, for a last look; the caller closes it."""
    consumer = KafkaConsumer(
        bootstrap_servers=[bootstrap], group_id=None, enable_auto_commit=False, **settings
    )
    deadline = time.monotonic() + timeout_s
    try:
        partitions = poll(lambda: consumer.partitions_for_topic(topic), bool, timeout_s, f"topic {topic}")
        assigned = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        last_growth, known = time.monotonic(), 0
        while readings() < expected and time.monotonic() < deadline:
            polled = consumer.poll(timeout_ms=poll_ms, max_records=50_000)
            read_ns = time.time_ns()
            for records in polled.values():
                handle(read_ns, records)
            if readings() > known:
                last_growth, known = time.monotonic(), readings()
            elif time.monotonic() - last_growth > idle_s:
                break
    except BaseException:
        consumer.close()
        raise
    return consumer


def read_topic(
    bootstrap: str, topic: str, expected: int, timeout_s: float = 120, idle_s: float = 10
) -> Arrival:
    """Every reading in `topic` by (device, seq), with how often it arrived; see read_from_start."""
    seen: Counter[tuple[str, int]] = Counter()
    newest = 0

    def count(_read_ns: int, records: list[ConsumerRecord]) -> None:
        nonlocal newest
        for record in records:
            envelope = decode(record.value)
            seen[(envelope.device, envelope.seq)] += 1
            newest = max(newest, record.timestamp)

    consumer = read_from_start(bootstrap, topic, count, lambda: len(seen), expected, timeout_s, idle_s)
    try:
        for _ in range(3):  # duplicates that are already there
            for records in consumer.poll(timeout_ms=200, max_records=50_000).values():
                count(0, records)
    finally:
        consumer.close()
    return Arrival(len(seen), sum(seen.values()), newest / 1000)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time the process `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


@contextmanager
def simulated_pipeline(
    stack: LocalStack,
    workdir: Path,
    name: str,
    rate: float,
    overrides: dict[str, Any] | None = None,
    devices: int = 10,
    also: tuple[str, ...] = (),
    first: tuple[str, ...] = ("influx_ingestion", "mqtt_kafka_bridge"),
) -> Iterator[tuple[dict[str, StageProcess], str]]:
    """Simulated boards at `rate` readings/s in all, through publisher, bridge and ingestion into a
    bucket of their own, with `overrides` on top of the config. The boards start once the bridge and
    the ingestion (the modules in `first`) are ready; the modules in `also` start after them (e.g.
    latency_probe). Yields the
    stages by module and the bucket; stops them on leaving."""
    run = uuid.uuid4().hex[:8]
    bucket = f"{name}{run}"
    stack.influx.add_bucket(bucket)
    settings = {
        "kafka": {"telemetry_topic": f"{name}-{run}"},
        "influxdb": {"bucket": bucket},
        "publisher": {
            "topic_template": f"{name}{run}/{{device}}/telemetry",
            "simulator": {"devices": devices, "rate_hz": rate / devices},
        },
        "bridge": {"routes": [{"mqtt_filter": f"{name}{run}/+/telemetry"}], "client_id": f"bridge-{run}"},
        "ingestion": {"group_id": f"{name}-{run}"},
        "health": {"port": 0},
        "logging": {"level": "WARNING"},
    }
    document = merged(merged(stack.config(), settings), overrides or {})
    config = write_config(workdir / f"{name}-{run}.yaml", document)
    ports = {module: free_port() for module in first}
    stages: dict[str, StageProcess] = {}
    try:
        for module, port in ports.items():
            env = {**stack.env(), "TWINPIPE__HEALTH__PORT": str(port)}
            stages[module] = StageProcess(module, config, workdir, env=env).start()
        poll(lambda: all(map(stage_ready, ports.values())), bool, 60, f"{', '.join(first)} ready")
        stages["publisher"] = StageProcess("publisher", config, workdir).start()
        for module in also:
            stages[module] = StageProcess(module, config, workdir, env=stack.env()).start()
        yield stages, bucket
    finally:
        for stage in reversed(stages.values()):
            stage.stop()
