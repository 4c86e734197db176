"""python -m alerting: evaluate the twin's alert rules on the stream and announce every transition."""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import uuid

import paho.mqtt.client as mqtt
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.errors import KafkaError, TopicAlreadyExistsError

from alerting.outputs import AlertmanagerForwarder, InfluxSink
from alerting.stage import Alerting, AlertStateUnavailable
from twinpipe.cli import load_or_exit, stage_parser, stop_on_signals
from twinpipe.clients import ensure_topics, kafka_consumer, kafka_producer, mqtt_client
from twinpipe.config import Config, ConfigError
from twinpipe.health import Check, HealthServer
from twinpipe.influx import InfluxWriter
from twinpipe.retry import until_connected

log = logging.getLogger("alerting")

DESCRIPTION = """\
Evaluate alerting.rules on the telemetry topic(s) (consumer group alerting.group_id) and on anomaly
events (alerting.anomaly_topic): above/below with raise and clear levels, rate_of_change, no_data
(deadman, on a timer) and anomaly, each with for_s, keep_firing_for_s and a severity, per
datastream of the observed property a rule names (overrides per thing and datastream). Each alert
(rule, device, datastream; a stable fingerprint) moves OK -> PENDING -> FIRING -> RESOLVED, and every
transition goes as JSON to Kafka alerting.topic (key = device), to MQTT alerting.mqtt_topic_template
(QoS 1), to InfluxDB (alerting.measurement: Grafana annotations and alert table) and, when
alerting.alertmanager.enabled, to Alertmanager's v2 API. The state survives restarts and rebalances
in the compacted alerting.state_topic. Metrics twinpipe_alerting_* on /metrics. See alerting/README.md.
"""


def ensure_state_topic(config: Config, inputs: list[str]) -> None:
    """Create the compacted state topic with as many partitions as the widest input topic, and
    refuse to run when an existing one has fewer (state partition p holds input partition p)."""
    kafka = config.kafka
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers, **kafka.security())
    name = config.alerting.state_topic
    try:
        described = _partitions(admin, inputs)
        needed = max([kafka.partitions, *described.values()])
        if name not in admin.list_topics():
            if not kafka.create_topics:
                raise ConfigError(
                    [
                        f"alerting.state_topic: {name!r} does not exist and kafka.create_topics is false;"
                        f" create it compacted (cleanup.policy=compact) with at least {needed} partitions"
                    ]
                )
            with contextlib.suppress(TopicAlreadyExistsError):
                settings = {
                    "num_partitions": needed,
                    "replication_factor": kafka.replication_factor,
                    "configs": {"cleanup.policy": "compact"},
                }
                admin.create_topics({name: settings})
        have = _partitions(admin, [name]).get(name, needed)
    finally:
        admin.close()
    if have < needed:
        raise ConfigError(
            [
                f"alerting.state_topic: {name!r} has {have} partitions, fewer than the input topics"
                f" ({described}); give it at least {needed} or name a new topic"
            ]
        )


def _partitions(admin: KafkaAdminClient, topics: list[str]) -> dict[str, int]:
    described = admin.describe_topics(topics)
    return {t.get("name") or t.get("topic"): len(t.get("partitions") or []) for t in described}


def main(argv: list[str] | None = None) -> int:
    args = stage_parser("python -m alerting", DESCRIPTION).parse_args(argv)
    config = load_or_exit(args.config)
    settings = config.alerting
    try:
        writer = InfluxWriter(config.influxdb) if settings.measurement else None
    except ConfigError as exc:
        print("\n".join(exc.errors), file=sys.stderr)
        return 2
    stop = stop_on_signals()
    inputs = config.telemetry_topics(settings.topics)
    if settings.anomaly_topic:
        inputs = [*inputs, settings.anomaly_topic]

    def connect() -> tuple:
        ensure_topics(config.kafka, [*inputs, settings.topic])
        ensure_state_topic(config, inputs)
        consumer = kafka_consumer(config.kafka, settings.group_id, auto_offset_reset=settings.start_from)
        return consumer, kafka_producer(config.kafka, linger_ms=1)

    # Served from the start, like the other stages: alive while connecting, not ready until the
    # loop runs; the stage's own checks replace these once it exists.
    kafka_name = f"Kafka {','.join(config.kafka.bootstrap_servers)}"
    live: dict[str, Check] = {"loop": lambda: True}
    ready: dict[str, Check] = {"kafka": lambda: f"connecting to {kafka_name}"}
    with HealthServer(config.health.host, config.health.port, live, ready) as health:
        try:
            clients = until_connected(connect, kafka_name, stop, (KafkaError,))
        except ConfigError as exc:
            print("\n".join(exc.errors), file=sys.stderr)
            return 2
        if clients is None:
            return 0
        return run(config, inputs, clients, writer, health, stop)


def run(
    config: Config,
    inputs: list[str],
    clients: tuple,
    writer: InfluxWriter | None,
    health: HealthServer,
    stop: threading.Event,
) -> int:
    """Connect MQTT, start the outputs' threads and run the loop until `stop`."""
    settings = config.alerting
    consumer, producer = clients

    def restore_consumer() -> KafkaConsumer:
        return kafka_consumer(config.kafka, None, auto_offset_reset="earliest")

    client = mqtt_client(config.mqtt, f"twinpipe-alerting-{uuid.uuid4().hex[:8]}")
    connected = threading.Event()

    def on_connect(_client: mqtt.Client, _userdata: object, _flags: object, reason, _props) -> None:
        if reason.is_failure:
            log.error("MQTT broker refused the connection: %s", reason)
        else:
            connected.set()
            log.info("connected to MQTT broker %s:%d", config.mqtt.host, config.mqtt.port)

    client.max_queued_messages_set(settings.max_queued_mqtt)
    client.on_connect = on_connect
    client.on_disconnect = lambda *_args: connected.clear()
    client.connect_async(config.mqtt.host, config.mqtt.port, config.mqtt.keepalive_s)
    client.loop_start()

    with contextlib.ExitStack() as exits:
        influx = (
            exits.enter_context(InfluxSink(writer, settings.measurement, settings.max_pending_points))
            if writer is not None and settings.measurement
            else None
        )
        forwarder = (
            exits.enter_context(AlertmanagerForwarder(settings.alertmanager))
            if settings.alertmanager.enabled
            else None
        )
        stage = Alerting(config, consumer, producer, restore_consumer, client, influx, forwarder)
        checks = stage.ready_checks()
        checks["mqtt"] = lambda: connected.is_set() or "not connected to MQTT"
        health.checks["loop"] = stage.heartbeat.alive
        health.ready_checks.update({"loop": stage.heartbeat.alive, **checks})
        consumer.subscribe(inputs, listener=stage.listener())
        try:
            stage.run(stop)
        except AlertStateUnavailable as exc:
            print(f"alerting: {exc}", file=sys.stderr)
            return 1
        finally:
            consumer.close(autocommit=False)
            producer.close(timeout=5)
            client.disconnect()
            client.loop_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
