"""python -m mqtt_kafka_bridge: forward MQTT telemetry to Kafka, at least once."""

from __future__ import annotations

import sys
import threading

from kafka import KafkaConsumer
from kafka.errors import KafkaError

from mqtt_kafka_bridge.bridge import Bridge
from mqtt_kafka_bridge.downlink import Downlink
from mqtt_kafka_bridge.producers import PRODUCERS, Producer
from twinpipe.cli import load_or_exit, stage_parser, stop_on_signals
from twinpipe.clients import ensure_topics, kafka_consumer, kafka_producer
from twinpipe.health import HealthServer
from twinpipe.retry import until_connected

DESCRIPTION = """\
Subscribe to the MQTT topic filters in bridge.routes (MQTT 5, QoS 1, persistent session named by
bridge.client_id) and produce each envelope to Kafka (acks=all), keyed by device id. Each MQTT
message is acknowledged only after Kafka acknowledged its record, so nothing is lost when the bridge,
the broker or Kafka goes down. Payloads that are not valid envelopes go to kafka.dead_letter_topic
with the reason in the header twinpipe.reason, and so does an envelope whose device is not the one
its topic names (bridge.routes[].device_level / check_device) or that claims the latency probe's
device "_probe" off the probe's topic. Retained messages replayed on subscribing are acknowledged,
counted and logged, not forwarded. Set bridge.shared_group to split the load between
replicas (each replica needs its own bridge.client_id). bridge.producer picks the Kafka client:
kafka-python (default) or confluent-kafka (librdkafka, faster). A record that fails (after
bridge.delivery_timeout_s) is re-sent after a backoff, oldest first; a producer left in a fatal state
is replaced; two clients on one bridge.client_id are named in the log. SIGTERM: deliver, acknowledge,
exit 0.

With bridge.downlink.enabled, also the way down: commands from Kafka bridge.downlink.command_topic
are published to MQTT twin/{device}/command (QoS 1, MQTT 5 message expiry = the command's remaining
life), a "sent" event goes to bridge.downlink.events_topic after the broker's PUBACK, then the
offset is committed; expired commands are not published ("expired" event). Command events the
publishers send on twin/{device}/command/events are forwarded to bridge.downlink.events_topic.
"""


def main(argv: list[str] | None = None) -> int:
    args = stage_parser("python -m mqtt_kafka_bridge", DESCRIPTION).parse_args(argv)
    config = load_or_exit(args.config)
    stop = stop_on_signals()
    settings = config.bridge
    fixed_topics = [
        route.kafka_topic for route in settings.routes if route.kafka_topic and "{" not in route.kafka_topic
    ]

    kafka = f"Kafka {','.join(config.kafka.bootstrap_servers)}"

    def connect() -> Producer:
        downlink_topics = (
            [settings.downlink.command_topic, settings.downlink.events_topic]
            if settings.downlink.enabled
            else []
        )
        ensure_topics(
            config.kafka,
            [config.kafka.telemetry_topic, config.kafka.dead_letter_topic, *fixed_topics, *downlink_topics],
        )
        return PRODUCERS[settings.producer](config)

    def replacement(stopped: threading.Event) -> Producer | None:
        make = PRODUCERS[settings.producer]
        return until_connected(lambda: make(config), kafka, stopped, (KafkaError,), action="reconnect to")

    producer = until_connected(connect, kafka, stop, (KafkaError,))
    if producer is None:
        return 0

    def downlink() -> Downlink:
        def consumer() -> KafkaConsumer:
            return kafka_consumer(
                config.kafka, settings.downlink.group_id, auto_offset_reset="earliest", max_poll_records=500
            )

        return Downlink(config, consumer, lambda: kafka_producer(config.kafka, linger_ms=0))

    with (
        Bridge(config, producer, replacement, downlink if settings.downlink.enabled else None) as bridge,
        HealthServer(config.health.host, config.health.port, bridge.health_checks(), bridge.ready_checks()),
    ):
        bridge.run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
