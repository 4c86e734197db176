"""Benchmark 2, bridge latency: MQTT publish → record readable from Kafka, p50/p99 at fixed rates.

Each message carries its publish time (trace.publish, stamped as it is sent); a consumer tailing
the topic (fetch wait 5 ms) stamps when it reads it. The broker cannot tell us when it appended a
record (Tansu ignores message.timestamp.type=LogAppendTime), so this includes the consumer's fetch;
the C pipeline at the same rate, measured the same way in the same run, shows what MQTT, Kafka and
the consumer take without a Python bridge."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from bench.loadgen import LeanPublisher
from devstack.stack import LocalStack
from latency_probe.recorder import quantiles
from twinpipe.envelope import TRACE_PUBLISH, Envelope, decode, encode

FETCH_WAIT_MS = 5
IDLE_S = 5


class Tail(threading.Thread):
    """Reads `topic` from the beginning once it exists; the delay of each message by its seq. Stops
    once `expected` arrived, or nothing new came for IDLE_S (a lossy pipeline), or at the timeout."""

    def __init__(self, bootstrap: str, topic: str, expected: int, timeout_s: float) -> None:
        super().__init__(daemon=True)
        self._consumer = KafkaConsumer(
            bootstrap_servers=[bootstrap], group_id=None, enable_auto_commit=False,
            fetch_max_wait_ms=FETCH_WAIT_MS,
        )  # fmt: skip
        self._topic, self._expected, self._deadline = topic, expected, time.monotonic() + timeout_s
        self.delays_s: dict[int, float] = {}

    def run(self) -> None:
        consumer = self._consumer
        try:
            while not (partitions := consumer.partitions_for_topic(self._topic)):
                if time.monotonic() > self._deadline:
                    return
                time.sleep(0.05)
            assigned = [TopicPartition(self._topic, p) for p in partitions]
            consumer.assign(assigned)
            consumer.seek_to_beginning(*assigned)
            last_new = time.monotonic()
            while len(self.delays_s) < self._expected and time.monotonic() < self._deadline:
                if self.delays_s and time.monotonic() - last_new > IDLE_S:
                    return
                polled = consumer.poll(timeout_ms=100)
                read_ns = time.time_ns()
                if polled:
                    last_new = time.monotonic()
                for records in polled.values():
                    for record in records:
                        envelope = decode(record.value)
                        self.delays_s.setdefault(
                            envelope.seq, (read_ns - envelope.trace[TRACE_PUBLISH]) / 1e9
                        )
        finally:
            consumer.close()


def paced(
    stack: LocalStack, workdir: Path, bridge, rate: int, seconds: float = 10, warmup_s: float = 2
) -> dict:
    """`rate` msg/s for `warmup_s + seconds` through `bridge`; the warm-up (topic creation, first
    metadata, consumer start) is not counted."""
    run = uuid.uuid4().hex[:8]
    topic, mqtt_filter = f"lat-{run}", f"l{run}/+/telemetry"
    count, skipped = int(rate * (seconds + warmup_s)), int(rate * warmup_s)
    values = {"temperature": 21.5, "humidity": 55.5, "pressure": 1013.25}

    def payload(i: int, now_ns: int) -> bytes:
        return encode(Envelope(f"dev-{i % 10}", "lat", i, now_ns, values, {TRACE_PUBLISH: now_ns}))

    with bridge(stack, workdir, mqtt_filter, topic, run):
        tail = Tail(stack.kafka.bootstrap, topic, count, timeout_s=seconds + warmup_s + 60)
        tail.start()
        publisher = LeanPublisher(stack.mosquitto.port, f"lat-{run}")
        publisher.publish_paced(f"l{run}/load/telemetry", count, rate, payload)
        tail.join()
        publisher.close()
    delays = [delay for seq, delay in tail.delays_s.items() if seq >= skipped]
    result = {"rate": rate, "messages": count - skipped, "received": len(delays)}
    if delays:
        p50, p99 = quantiles(delays, (0.5, 0.99))
        result |= {
            "p50_ms": round(p50 * 1e3, 2),
            "p99_ms": round(p99 * 1e3, 2),
            "max_ms": round(max(delays) * 1e3, 2),
        }
    return result
