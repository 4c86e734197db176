"""What every benchmark shares: payloads, counting what reached Kafka, and min/median/max."""

from __future__ import annotations

import statistics
import time
from collections import Counter
from dataclasses import dataclass

from kafka import KafkaConsumer, TopicPartition

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


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}
