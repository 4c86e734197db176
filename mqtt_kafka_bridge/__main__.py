"""python -m mqtt_kafka_bridge: forward MQTT telemetry to Kafka, at least once."""

from __future__ import annotations

import sys
import threading

from kafka.errors import KafkaError

from mqtt_kafka_bridge.bridge import Bridge
from mqtt_kafka_bridge.producers import PRODUCERS, Producer
from twinpipe.cli import load_or_exit, stage_parser, stop_on_signals
from twinpipe.clients import ensure_topics
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
        ensure_topics(
            config.kafka, [config.kafka.telemetry_topic, config.kafka.dead_letter_topic, *fixed_topics]
        )
        return PRODUCERS[settings.producer](config)

    def replacement(stopped: threading.Event) -> Producer | None:
        make = PRODUCERS[settings.producer]
        return until_connected(lambda: make(config), kafka, stopped, (KafkaError,), action="reconnect to")

    producer = until_connected(connect, kafka, stop, (KafkaError,))
    if producer is None:
        return 0
    with (
        Bridge(config, producer, replacement) as bridge,
        HealthServer(config.health.host, config.health.port, bridge.health_checks(), bridge.ready_checks()),
    ):
        bridge.run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
