"""Benchmark 2, bridge latency: MQTT publish → record readable from Kafka, p50/p99 at fixed rates.

Each message carries its publish time (trace.publish, stamped as it is sent); a consumer tailing
the topic (fetch wait 5 ms) stamps when it reads it. The broker cannot tell us when it appended a
record (Tansu ignores message.timestamp.type=LogAppendTime), so this includes the consumer's fetch;
the C pipeline at the same rate, measured the same way in the same run, shows what MQTT, Kafka and
the consumer take without a Python bridge."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kafka.consumer.fetcher import ConsumerRecord

from bench.common import delay_figures, read_from_start
from bench.loadgen import LeanPublisher
from devstack.stack import LocalStack
from twinpipe.envelope import TRACE_PUBLISH, Envelope, decode, encode

FETCH_WAIT_MS = 5
IDLE_S = 5


def publish_to_read_delays(bootstrap: str, topic: str, expected: int, timeout_s: float) -> dict[int, float]:
    """Seconds from each message's publish stamp to its first read, by seq (see read_from_start)."""
    delays_s: dict[int, float] = {}

    def stamp(read_ns: int, records: list[ConsumerRecord]) -> None:
        for record in records:
            envelope = decode(record.value)
            delays_s.setdefault(envelope.seq, (read_ns - envelope.trace[TRACE_PUBLISH]) / 1e9)

    read_from_start(
        bootstrap, topic, stamp, lambda: len(delays_s), expected, timeout_s, IDLE_S,
        poll_ms=100, fetch_max_wait_ms=FETCH_WAIT_MS,
    ).close()  # fmt: skip
    return delays_s


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

    with bridge(stack, workdir, mqtt_filter, topic, run), ThreadPoolExecutor(1) as reader:
        tail = reader.submit(
            publish_to_read_delays, stack.kafka.bootstrap, topic, count, seconds + warmup_s + 60
        )
        publisher = LeanPublisher(stack.mosquitto.port, f"lat-{run}")
        publisher.publish_paced(f"l{run}/load/telemetry", count, rate, payload)
        delays_s = tail.result()
        publisher.close()
    delays = [delay for seq, delay in delays_s.items() if seq >= skipped]
    result = {"rate": rate, "messages": count - skipped, "received": len(delays)}
    return result | delay_figures(delays)
