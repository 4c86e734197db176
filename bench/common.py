"""What every benchmark shares: payloads, a simulated pipeline, counting what reached Kafka, and
min/median/max."""

from __future__ import annotations

import os
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from devstack.process import free_port, poll, stage_ready
from devstack.stack import LocalStack, merged, write_config
from devstack.stages import StageProcess
from twinpipe.envelope import Envelope, decode, encode


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


def read_topic(
    bootstrap: str, topic: str, expected: int, timeout_s: float = 120, idle_s: float = 10
) -> Arrival:
    """Read `topic` from the beginning until `expected` distinct readings arrived, or nothing new
    came for `idle_s` (a lossy bridge never delivers them all), or the timeout."""
    consumer = KafkaConsumer(bootstrap_servers=[bootstrap], group_id=None, enable_auto_commit=False)
    seen: Counter[tuple[str, int]] = Counter()
    newest = 0
    try:
        deadline = time.monotonic() + timeout_s
        while not consumer.partitions_for_topic(topic):
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {topic} never appeared")
            time.sleep(0.1)
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)

        def read(timeout_ms: int) -> None:
            nonlocal newest
            for records in consumer.poll(timeout_ms=timeout_ms, max_records=50_000).values():
                for record in records:
                    envelope = decode(record.value)
                    key = (envelope.device, envelope.seq)
                    seen[key] += 1
                    newest = max(newest, record.timestamp)

        last_growth, known = time.monotonic(), 0
        while len(seen) < expected and time.monotonic() < deadline:
            read(500)
            if len(seen) > known:
                last_growth, known = time.monotonic(), len(seen)
            elif time.monotonic() - last_growth > idle_s:
                break
        for _ in range(3):  # duplicates that are already there
            read(200)
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
) -> Iterator[tuple[dict[str, StageProcess], str]]:
    """Simulated boards at `rate` readings/s in all, through publisher, bridge and ingestion into a
    bucket of their own, with `overrides` on top of the config. The boards start once the bridge and
    the ingestion are ready; the modules in `also` start after them (e.g. latency_probe). Yields the
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
    ports = {module: free_port() for module in ("influx_ingestion", "mqtt_kafka_bridge")}
    stages: dict[str, StageProcess] = {}
    try:
        for module, port in ports.items():
            env = {**stack.env(), "TWINPIPE__HEALTH__PORT": str(port)}
            stages[module] = StageProcess(module, config, workdir, env=env).start()
        poll(lambda: all(map(stage_ready, ports.values())), bool, 60, "bridge and ingestion ready")
        stages["publisher"] = StageProcess("publisher", config, workdir).start()
        for module in also:
            stages[module] = StageProcess(module, config, workdir, env=stack.env()).start()
        yield stages, bucket
    finally:
        for stage in reversed(stages.values()):
            stage.stop()
