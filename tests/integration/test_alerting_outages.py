"""The alerting stage through outages of its outputs, on real servers: Mosquitto down from before the
stage starts until after a transition (the transition reaches a QoS 1 subscriber once Mosquitto is
back, and the stage keeps running and committing meanwhile)."""

from __future__ import annotations

import json
import signal
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from devstack.process import free_port, http_get, metric_value
from tests.harness import Pipeline, poll
from twinpipe.clients import connect_properties
from twinpipe.envelope import Envelope, encode, new_boot_id


def reading(boot: str, seq: int, celsius: float, time_ns: int | None = None) -> bytes:
    values = {"temperature": celsius}
    return encode(Envelope("sim-1", boot, seq, time_ns or time.time_ns(), values))


def committed(pipeline: Pipeline, group: str) -> int:
    """The offsets `group` committed on the telemetry topic, summed over partitions."""
    consumer = KafkaConsumer(
        bootstrap_servers=[pipeline.stack.kafka.bootstrap], group_id=group, enable_auto_commit=False
    )
    try:
        topic = pipeline.telemetry_topic
        found = [consumer.committed(TopicPartition(topic, p)) for p in consumer.partitions_for_topic(topic)]
    finally:
        consumer.close()
    return sum(offset or 0 for offset in found)


class Subscriber:
    """A QoS 1 subscriber with a persistent session (clean_start false, session expiry): Mosquitto
    (persistence on) keeps its subscription and queued messages across its own restart."""

    def __init__(self, pipeline: Pipeline, topic: str) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"sub-{pipeline.id}", protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.on_message = lambda _c, _u, message: self._add(json.loads(message.payload))
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect(
            "127.0.0.1", pipeline.stack.mosquitto.port, clean_start=False, properties=connect_properties(600)
        )
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()

    def _add(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.events.append(event)

    def states(self) -> list[str]:
        with self._lock:
            return [e["state"] for e in self.events]


def test_transitions_while_mqtt_is_down_are_sent_when_it_is_back(pipeline: Pipeline) -> None:
    run = pipeline.id
    health = free_port()
    settings = {
        "mqtt": {"reconnect_min_s": 0.2, "reconnect_max_s": 1.0},
        "alerting": {
            "group_id": f"alerting-{run}",
            "start_from": "earliest",
            "anomaly_topic": None,
            "topic": f"alerts-{run}",
            "state_topic": f"alert-state-{run}",
            "mqtt_topic_template": f"{pipeline.mqtt_prefix}/{{device}}/alerts",
            "commit_interval_s": 0.5,
            "rules": {"hot": {"observed_property": "temperature", "kind": "above", "raise": 35.0}},
        },
    }
    subscriber = Subscriber(pipeline, f"{pipeline.mqtt_prefix}/+/alerts")
    poll(subscriber.client.is_connected, bool, 10, "subscriber connected")
    broker = pipeline.stack.mosquitto
    broker.stop(signal.SIGTERM)  # saves the subscriber's session (persistence)
    try:
        alerting = pipeline.stage("alerting", settings, env={"TWINPIPE__HEALTH__PORT": str(health)})
        poll(alerting.log, lambda log: "partitions assigned" in log, 30, "alerting assigned")
        producer = KafkaProducer(bootstrap_servers=[pipeline.stack.kafka.bootstrap], acks="all")
        boot = new_boot_id()
        producer.send(pipeline.telemetry_topic, key=b"sim-1", value=reading(boot, 1, 40.0)).get(10)
        pipeline.kafka_records(f"alerts-{run}", 1)

        def metrics() -> str:
            return http_get(f"http://127.0.0.1:{health}/metrics")[1]

        # Checkpoints go on without MQTT: the offsets are committed, MQTT counted as unacknowledged.
        poll(
            metrics,
            lambda page: metric_value(page, "twinpipe_alerting_mqtt_unacknowledged_total") >= 1,
            10,
            "a checkpoint with MQTT down",
        )
        poll(lambda: committed(pipeline, f"alerting-{run}"), lambda n: n >= 1, 10, "offsets committed")
        assert alerting.running(), alerting.log()
        assert subscriber.states() == []
    finally:
        broker.start()
    firing = poll(subscriber.states, lambda states: "firing" in states, 20, "firing on MQTT after the outage")
    producer.send(pipeline.telemetry_topic, key=b"sim-1", value=reading(boot, 2, 20.0)).get(10)
    producer.close()
    poll(subscriber.states, lambda states: "resolved" in states, 20, "resolved on MQTT")
    assert firing == ["firing"] and subscriber.states() == ["firing", "resolved"]
    assert "Traceback" not in alerting.log() and alerting.running()
    assert metric_value(metrics(), "twinpipe_alerting_mqtt_dropped_total") == 0
    assert metric_value(metrics(), "twinpipe_alerting_commit_failures_total") == 0
    subscriber.client.loop_stop()
    subscriber.client.disconnect()


def test_health_is_served_while_kafka_is_unreachable_at_start(pipeline: Pipeline) -> None:
    """Nothing listens on the port given as Kafka: /healthz is green (the stage retries), /readyz
    red naming Kafka, as the other stages do."""
    health, nothing = free_port(), free_port()
    alerting = pipeline.stage(
        "alerting",
        {"kafka": {"bootstrap_servers": [f"127.0.0.1:{nothing}"]}, "alerting": {"anomaly_topic": None}},
        env={"TWINPIPE__HEALTH__PORT": str(health)},
    )
    status, _ = poll(lambda: http_get(f"http://127.0.0.1:{health}/healthz"), lambda r: r[0], 20, "/healthz")
    assert status == 200
    status, body = http_get(f"http://127.0.0.1:{health}/readyz")
    assert status == 503 and "Kafka" in json.loads(body)["reasons"]["kafka"], body
    assert alerting.running()
    # SIGTERM would wait for the connection attempt under way (kafka-python's bootstrap gives up
    # after 30 s); nothing is at stake before the stage has connected.
    alerting.kill()
