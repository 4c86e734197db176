"""mqtt_kafka_bridge against real Mosquitto and a real Kafka-protocol broker (Tansu)."""

from __future__ import annotations

import json
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from devstack.mosquitto import Mosquitto
from tests.harness import Pipeline, poll
from twinpipe.envelope import Envelope, decode, encode


def envelope(device: str, seq: int) -> bytes:
    return encode(
        Envelope(device, "boot-1", seq, 1_700_000_000_000_000_000 + seq, {"temperature": 20.0 + seq})
    )


def publish_all(client: mqtt.Client, items: list[tuple[str, bytes]]) -> None:
    infos = [client.publish(topic, payload, qos=1) for topic, payload in items]
    for info in infos:
        info.wait_for_publish(timeout=10)
        assert info.is_published()


PRODUCERS = pytest.mark.parametrize("producer", ["kafka-python", "confluent-kafka"])


@PRODUCERS
def test_envelopes_reach_kafka_keyed_by_device_and_bad_payloads_are_dead_lettered(
    pipeline: Pipeline, producer: str
) -> None:
    bridge = pipeline.stage("mqtt_kafka_bridge", {"bridge": {"producer": producer}})
    poll(bridge.log, lambda log: "connected to MQTT broker" in log, 20, "bridge connected")
    client = pipeline.mqtt_client()
    topic = f"{pipeline.mqtt_prefix}/{{}}/telemetry"
    good = [(topic.format(f"d{seq % 3}"), envelope(f"d{seq % 3}", seq)) for seq in range(30)]
    bad = [(topic.format("x"), b"not json"), (topic.format("x"), json.dumps({"v": 9}).encode())]
    publish_all(client, good[:15] + bad + good[15:])

    records = pipeline.kafka_records(pipeline.telemetry_topic, 30)
    assert len(records) == 30
    by_seq = {decode(r.value).seq: r for r in records}
    assert sorted(by_seq) == list(range(30))
    for seq, record in by_seq.items():
        received = decode(record.value)
        assert record.key == f"d{seq % 3}".encode()
        assert received.values == {"temperature": 20.0 + seq}
        assert received.trace["bridge"] >= received.time_ns

    dead = pipeline.kafka_records(pipeline.dead_letter_topic, 2)
    reasons = {r.value: dict(r.headers)["twinpipe.reason"].decode() for r in dead}
    assert reasons[b"not json"].startswith("not JSON")
    assert "unsupported envelope version 9" in reasons[json.dumps({"v": 9}).encode()]
    client.loop_stop()
    assert bridge.stop() == 0, bridge.log()


@PRODUCERS
def test_messages_published_while_the_bridge_is_down_arrive_after_restart(
    pipeline: Pipeline, producer: str
) -> None:
    using = {"bridge": {"producer": producer}}
    bridge = pipeline.stage("mqtt_kafka_bridge", using)
    poll(bridge.log, lambda log: "session new" in log, 20, "bridge connected")
    assert bridge.stop() == 0, bridge.log()  # SIGTERM: clean exit, the session stays on the broker

    client = pipeline.mqtt_client()
    topic = f"{pipeline.mqtt_prefix}/d1/telemetry"
    publish_all(client, [(topic, envelope("d1", seq)) for seq in range(200)])
    client.loop_stop()

    bridge = pipeline.stage("mqtt_kafka_bridge", using)
    records = pipeline.kafka_records(pipeline.telemetry_topic, 200)
    assert sorted(decode(r.value).seq for r in records) == list(range(200))
    assert "session resumed" in bridge.log()
    assert bridge.stop() == 0


def test_shared_subscription_splits_the_load_between_replicas(pipeline: Pipeline) -> None:
    shared = {"bridge": {"shared_group": f"g{pipeline.id}"}}
    first = pipeline.stage(
        "mqtt_kafka_bridge", {**shared, "bridge": {**shared["bridge"], "client_id": f"a{pipeline.id}"}}
    )
    second = pipeline.stage(
        "mqtt_kafka_bridge", {**shared, "bridge": {**shared["bridge"], "client_id": f"b{pipeline.id}"}}
    )
    for bridge in (first, second):
        poll(bridge.log, lambda log: "connected to MQTT broker" in log, 20, "bridge connected")
    client = pipeline.mqtt_client()
    topic = f"{pipeline.mqtt_prefix}/d{{}}/telemetry"
    publish_all(client, [(topic.format(seq % 4), envelope(f"d{seq % 4}", seq)) for seq in range(400)])
    client.loop_stop()
    records = pipeline.kafka_records(pipeline.telemetry_topic, 400)
    assert sorted(decode(r.value).seq for r in records) == list(range(400))  # none lost, none twice
    assert first.stop() == 0 and second.stop() == 0
    counts = [int(b.log().rsplit("stopped: ", 1)[1].split()[0]) for b in (first, second)]
    assert sum(counts) == 400 and min(counts) > 0, counts


def test_mosquitto_restart_mid_stream_loses_nothing(pipeline: Pipeline, tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "own-broker")
    broker.start()
    try:
        fast = {"mqtt": {"port": broker.port, "reconnect_max_s": 0.5}}
        bridge = pipeline.stage("mqtt_kafka_bridge", fast)
        poll(bridge.log, lambda log: "connected to MQTT broker" in log, 20, "bridge connected")
        publisher = pipeline.stage("publisher", {**fast, "publisher": {"simulator": {"rate_hz": 200}}})
        pipeline.kafka_records(pipeline.telemetry_topic, 200)
        broker.stop()
        broker.start()  # same persistence file: the bridge's session and its queued messages survive
        poll(bridge.log, lambda log: "session resumed" in log, 20, "bridge back on its session")
        pipeline.kafka_records(pipeline.telemetry_topic, 1200)
        assert publisher.stop() == 0
        published = int(publisher.log().rsplit("stopped: ", 1)[1].split()[0])
        records = pipeline.kafka_records(pipeline.telemetry_topic, published)
        seqs = sorted({decode(r.value).seq for r in records})
        assert seqs == list(range(published)), "every published reading reached Kafka"
        duplicates = len(records) - published
        print(f"\nmosquitto restart: {published} published, {len(records)} records ({duplicates} duplicates)")
        assert bridge.stop() == 0
    finally:
        broker.stop()
