"""python -m consumer_display: watch the telemetry stream in Kafka."""

from __future__ import annotations

import argparse
import itertools
import sys
import threading
import time

from kafka import KafkaConsumer, TopicPartition

from consumer_display.render import Redeliveries, Throttle, format_line, hop_delays_ms
from twinpipe.cli import load_or_exit, stage_parser, stop_on_signals
from twinpipe.clients import kafka_consumer
from twinpipe.config import Config
from twinpipe.envelope import EnvelopeError, decode

DESCRIPTION = """\
Print the telemetry stream: time, device, seq, values and the delay of each hop recorded in the
envelope's trace (board read → MQTT → bridge → Kafka → here). Reads without a consumer group, so it
never takes records away from the ingestion. At high rates it shows display.max_lines_per_s lines
per second and a summary of the rest; --json prints every envelope, one per line, for piping.
A reading delivered twice (the pipeline is at-least-once) is shown once; how many repeats were
hidden is said on stderr at exit.
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = stage_parser("python -m consumer_display", DESCRIPTION)
    parser.add_argument(
        "--topic", action="append", help="Kafka topic (repeatable; default kafka.telemetry_topic)"
    )
    parser.add_argument("--device", action="append", help="only this device (repeatable)")
    parser.add_argument(
        "--from-beginning", action="store_true", help="start at the oldest record, not the newest"
    )
    parser.add_argument("--json", action="store_true", help="print each envelope as one JSON line")
    parser.add_argument("--count", type=int, help="exit after this many messages")
    parser.add_argument("--duration", type=float, metavar="SECONDS", help="exit after this long")
    return parser.parse_args(argv)


def assign(consumer: KafkaConsumer, topics: list[str], from_beginning: bool, stop: threading.Event) -> None:
    partitions: list[TopicPartition] = []
    for topic in topics:
        while not stop.is_set() and not consumer.partitions_for_topic(topic):
            print(f"waiting for topic {topic} to exist…", file=sys.stderr)
            stop.wait(2)
        partitions += [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    consumer.assign(partitions)
    (consumer.seek_to_beginning if from_beginning else consumer.seek_to_end)(*partitions)


def show(consumer: KafkaConsumer, args: argparse.Namespace, config: Config, stop: threading.Event) -> int:
    out = sys.stdout
    devices = set(args.device or config.display.devices)
    throttle = Throttle(config.display.max_lines_per_s)
    redelivered = Redeliveries()
    shown = 0
    deadline = time.monotonic() + args.duration if args.duration else None
    while not stop.is_set() and (args.count is None or shown < args.count):
        if deadline and time.monotonic() >= deadline:
            break
        for record in itertools.chain.from_iterable(consumer.poll(timeout_ms=200).values()):
            try:
                envelope = decode(record.value or b"")
            except EnvelopeError as exc:
                print(f"! {record.topic}/{record.partition}/{record.offset}: {exc.reason}", file=sys.stderr)
                continue
            if (devices and envelope.device not in devices) or redelivered.is_repeat(envelope):
                continue
            shown += 1
            if args.json:
                out.write(record.value.decode() + "\n")
            elif throttle.admit(envelope.device):
                delays = hop_delays_ms(envelope, record.timestamp, time.time_ns())
                out.write(format_line(envelope, delays) + "\n")
            if args.count is not None and shown >= args.count:
                break
        summary = None if args.json else throttle.summary()
        if summary:
            out.write(summary + "\n")
        out.flush()  # once per poll, not per message
    if redelivered.repeats:
        print(f"{redelivered.repeats} reading(s) delivered more than once were shown once", file=sys.stderr)
    return shown


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = load_or_exit(args.config)
    stop = stop_on_signals()
    consumer = kafka_consumer(config.kafka, group_id=None)
    try:
        assign(
            consumer, config.telemetry_topics(args.topic or config.display.topics), args.from_beginning, stop
        )
        show(consumer, args, config, stop)
    finally:
        consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
