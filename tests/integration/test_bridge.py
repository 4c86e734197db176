"""mqtt_kafka_bridge against real Mosquitto and a real Kafka-protocol broker (Tansu)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.subscribeoptions import SubscribeOptions

from devstack.mosquitto import Mosquitto
from devstack.process import free_port, stage_metric, stage_ready
from devstack.stages import StageProcess
from tests.harness import Pipeline, assert_not_ready_naming_takeover, poll
from twinpipe.envelope import PROBE_DEVICE, Envelope, decode, encode
from twinpipe.takeover import STRIKES


def envelope(device: str, seq: int) -> bytes:
    return encode(
        Envelope(device, "boot-1", seq, 1_700_000_000_000_000_000 + seq, {"temperature": 20.0 + seq})
    )


def publish_all(client: mqtt.Client, items: list[tuple[str, bytes]], retain: bool = False) -> None:
    infos = [client.publish(topic, payload, qos=1, retain=retain) for topic, payload in items]
    for info in infos:
        info.wait_for_publish(timeout=10)
        assert info.is_published()


PRODUCERS = pytest.mark.parametrize("producer", ["kafka-python", "confluent-kafka"])


@PRODUCERS
def test_envelopes_reach_kafka_keyed_by_device_and_bad_payloads_are_dead_lettered(
    pipeline: Pipeline, producer: str
) -> None:
    bridge, _port = ready_bridge(pipeline, {"bridge": {"producer": producer}})
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
    bridge, _port = ready_bridge(pipeline, using)  # subscribed: the session will queue for it
    assert "session new" in bridge.log()
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
    """Each replica waits for its own /readyz (subscribed) and is counted on its own /metrics: the
    replicas share one log file, so their log lines cannot tell them apart."""
    group = f"g{pipeline.id}"
    (first, first_port), (second, second_port) = (
        ready_bridge(pipeline, {"bridge": {"shared_group": group, "client_id": f"{name}{pipeline.id}"}})
        for name in ("a", "b")
    )
    client = pipeline.mqtt_client()
    topic = f"{pipeline.mqtt_prefix}/d{{}}/telemetry"
    publish_all(client, [(topic.format(seq % 4), envelope(f"d{seq % 4}", seq)) for seq in range(400)])
    client.loop_stop()
    records = pipeline.kafka_records(pipeline.telemetry_topic, 400)
    assert sorted(decode(r.value).seq for r in records) == list(range(400))  # none lost, none twice
    counts = [
        stage_metric(port, "twinpipe_bridge_records_delivered_total") for port in (first_port, second_port)
    ]
    assert sum(counts) == 400 and min(counts) > 0, counts
    assert first.stop() == 0 and second.stop() == 0


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


def ready_bridge(pipeline: Pipeline, override: dict | None = None) -> tuple[StageProcess, int]:
    """A bridge with its own health port, once /readyz says it is connected and subscribed."""
    port = free_port()
    bridge = pipeline.stage("mqtt_kafka_bridge", {**(override or {}), "health": {"port": port}})

    def ready() -> bool:
        assert bridge.running(), bridge.log()
        return stage_ready(port)

    poll(ready, bool, 30, "bridge ready")
    return bridge, port


def wait_ignored_retained(port: int, count: int) -> None:
    metric = "twinpipe_bridge_ignored_messages_total"
    poll(lambda: stage_metric(port, metric, kind="retained"), lambda n: n == count, 20, f"{count} ignored")


def reasons_by_value(records: list) -> dict[bytes, str]:
    return {r.value: dict(r.headers)["twinpipe.reason"].decode() for r in records}


def test_envelope_device_must_be_the_topic_device_and_the_probe_device_only_comes_on_the_probe_topic(
    pipeline: Pipeline,
) -> None:
    prefix = pipeline.mqtt_prefix
    legacy = f"{prefix}-gw/+/data"  # a gateway publishing for several devices: the route allows it
    routes = [{"mqtt_filter": f"{prefix}/+/telemetry"}, {"mqtt_filter": legacy, "check_device": False}]
    bridge, port = ready_bridge(pipeline, {"bridge": {"routes": routes}})
    client = pipeline.mqtt_client()
    spoofed, probe_elsewhere = envelope("d2", 1), envelope(PROBE_DEVICE, 3)
    probe_on_gateway = envelope(PROBE_DEVICE, 5)
    publish_all(
        client,
        [
            (f"{prefix}/d1/telemetry", envelope("d1", 0)),
            (f"{prefix}/d1/telemetry", spoofed),  # d2's reading on d1's topic
            (f"{prefix}/{PROBE_DEVICE}/telemetry", envelope(PROBE_DEVICE, 2)),  # where the probe publishes
            (f"{prefix}/d3/telemetry", probe_elsewhere),
            (f"{prefix}-gw/gw1/data", envelope("d4", 4)),
            (f"{prefix}-gw/gw1/data", probe_on_gateway),  # check_device: false does not open _probe
        ],
    )
    client.loop_stop()
    records = pipeline.kafka_records(pipeline.telemetry_topic, 3)
    assert sorted((decode(r.value).seq, r.key) for r in records) == [(0, b"d1"), (2, b"_probe"), (4, b"d4")]
    reasons = reasons_by_value(pipeline.kafka_records(pipeline.dead_letter_topic, 3))
    assert len(reasons) == 3
    assert reasons[spoofed].startswith(
        f"envelope device 'd2' differs from the device named by topic '{prefix}/d1/telemetry' at level 1"
    )
    for payload, topic in (
        (probe_elsewhere, f"{prefix}/d3/telemetry"),
        (probe_on_gateway, f"{prefix}-gw/gw1/data"),
    ):
        assert reasons[payload] == (
            f"device '_probe' on '{topic}': that device id is reserved for the latency probe, which "
            f"publishes only on '{prefix}/_probe/telemetry'"
        )
    assert stage_metric(port, "twinpipe_bridge_dead_letters_total", kind="device_mismatch") == 1
    assert stage_metric(port, "twinpipe_bridge_dead_letters_total", kind="reserved_device") == 2
    assert bridge.stop() == 0, bridge.log()


def test_a_retained_message_is_not_a_reading_and_not_redelivered_on_reconnect(pipeline: Pipeline) -> None:
    """Before: one retained message and two restarts made 3 dead letters. Now a retained message
    replayed on subscribing is acknowledged, counted and logged with how to clear it; one published
    while the bridge is subscribed (or queued in its session) is a reading like any other."""
    prefix = pipeline.mqtt_prefix
    junk_topic, live_topic = f"{prefix}/dx/telemetry", f"{prefix}/d1/telemetry"
    client = pipeline.mqtt_client()
    publish_all(client, [(junk_topic, b"not json")], retain=True)  # before the bridge ever subscribed
    bridge, port = ready_bridge(pipeline)
    wait_ignored_retained(port, 1)
    assert f"Clear it with: mosquitto_pub -r -n -t '{junk_topic}'" in bridge.log()
    publish_all(client, [(live_topic, envelope("d1", 0))], retain=True)  # live: forwarded once
    pipeline.kafka_records(pipeline.telemetry_topic, 1)
    assert bridge.stop() == 0

    publish_all(client, [(live_topic, envelope("d1", 1))], retain=True)  # queued in the bridge's session
    for _restart in range(2):
        bridge, port = ready_bridge(pipeline)
        wait_ignored_retained(port, 2)
        assert bridge.stop() == 0, bridge.log()

    bridge, port = ready_bridge(pipeline)
    publish_all(client, [(junk_topic, b"marker"), (live_topic, envelope("d1", 2))])  # not retained
    records = pipeline.kafka_records(pipeline.telemetry_topic, 3)
    assert sorted(decode(r.value).seq for r in records) == [0, 1, 2]  # each reading once
    dead = pipeline.kafka_records(pipeline.dead_letter_topic, 1)
    assert [r.value for r in dead] == [b"marker"]  # the retained "not json" never dead-lettered
    publish_all(client, [(junk_topic, b""), (live_topic, b"")], retain=True)  # clear them
    client.loop_stop()
    assert bridge.stop() == 0


def test_the_publisher_never_publishes_retained(pipeline: Pipeline) -> None:
    """Subscribed with Retain As Published, a message shows the retain flag its publisher set."""
    seen: list[mqtt.MQTTMessage] = []
    client = pipeline.mqtt_client()
    client.on_message = lambda _c, _u, message: seen.append(message)
    subscribed = client.subscribe(
        f"{pipeline.mqtt_prefix}/#", options=SubscribeOptions(qos=1, retainAsPublished=True)
    )
    assert subscribed[0] == mqtt.MQTT_ERR_SUCCESS
    publisher = pipeline.stage("publisher", {"publisher": {"simulator": {"devices": 2, "rate_hz": 50}}})
    poll(lambda: len(seen), lambda n: n >= 40, 30, "40 readings")
    assert publisher.stop() == 0
    client.loop_stop()
    assert [m.topic for m in seen if m.retain] == []


def documented_acl() -> str:
    """The ACL example in mqtt_kafka_bridge/README.md (its only ```conf block)."""
    readme = (Path(__file__).resolve().parents[2] / "mqtt_kafka_bridge" / "README.md").read_text()
    return readme.split("```conf\n", 1)[1].split("```", 1)[0]


def test_the_documented_acl_lets_each_user_publish_only_as_itself(tmp_path: Path) -> None:
    password = "pw-" + tmp_path.name[-8:]
    users = ["twinpipe", "twinpipe-bridge", "twinpipe-probe", "twinpipe-publisher", "d1"]
    passwd = tmp_path / "passwd"
    for i, user in enumerate(users):
        subprocess.run(
            ["mosquitto_passwd", *(["-c"] if i == 0 else []), "-b", str(passwd), user, password], check=True
        )
    acl = tmp_path / "acl"
    acl.write_text(documented_acl())
    broker = Mosquitto(
        tmp_path / "broker", extra_config=f"password_file {passwd}\nacl_file {acl}\n", anonymous=False
    )
    broker.credentials = ("twinpipe", password)  # the healthcheck user, reading $SYS/broker/version
    with broker:

        def client(user: str, name: str) -> mqtt.Client:
            c = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=name,
                protocol=MQTTProtocolVersion.MQTTv5,
            )
            c.username_pw_set(user, password)
            c.connect("127.0.0.1", broker.port)
            c.loop_start()
            return c

        received: list[str] = []
        reader = client("twinpipe-bridge", "reader")
        reader.on_message = lambda _c, _u, message: received.append(message.topic)
        subscribed = threading.Event()
        reader.on_subscribe = lambda *_args: subscribed.set()
        reader.subscribe([("twin/+/telemetry", 1), ("twin/+/command/events", 1)])
        assert subscribed.wait(10)

        outcomes: dict[tuple[str, str], bool] = {}
        attempts = [
            ("twinpipe-publisher", "twin/sim-1/telemetry"),
            ("twinpipe-publisher", "twin/_probe/telemetry"),
            ("twinpipe-probe", "twin/_probe/telemetry"),
            ("twinpipe-probe", "twin/d1/telemetry"),
            ("d1", "twin/d1/telemetry"),
            ("d1", "twin/d2/telemetry"),
            ("d1", "twin/_probe/telemetry"),
            ("twinpipe-bridge", "twin/d1/telemetry"),
            # Commands: only the bridge writes them; command events come from publishers and boards.
            ("twinpipe-bridge", "twin/d1/command"),
            ("twinpipe-publisher", "twin/d1/command"),
            ("d1", "twin/d1/command"),
            ("twinpipe-publisher", "twin/sim-1/command/events"),
            ("d1", "twin/d1/command/events"),
            ("d1", "twin/d2/command/events"),
            ("twinpipe-bridge", "twin/d1/command/events"),
        ]
        for i, (user, topic) in enumerate(attempts):
            publisher = client(user, f"attempt-{i}")
            acked: list[bool] = []
            publisher.on_publish = lambda _c, _u, _mid, reason, _p, acked=acked: acked.append(
                not reason.is_failure
            )
            publisher.publish(topic, envelope("x", 0), qos=1).wait_for_publish(10)
            poll(lambda acked=acked: acked, bool, 10, f"PUBACK for {user} on {topic}")
            outcomes[(user, topic)] = acked[0]
            publisher.disconnect()
            publisher.loop_stop()
        allowed = [key for key, ok in outcomes.items() if ok]
        assert allowed == [
            ("twinpipe-publisher", "twin/sim-1/telemetry"),
            ("twinpipe-probe", "twin/_probe/telemetry"),
            ("d1", "twin/d1/telemetry"),
            ("twinpipe-bridge", "twin/d1/command"),
            ("twinpipe-publisher", "twin/sim-1/command/events"),
            ("d1", "twin/d1/command/events"),
        ]
        readable = [topic for _user, topic in allowed if not topic.endswith("/command")]
        poll(lambda: sorted(received), lambda r: len(r) >= len(readable), 10, "the allowed messages")
        assert sorted(received) == sorted(readable)
        reader.loop_stop()


def test_two_bridges_on_one_client_id_name_the_stolen_session_once_back_off_and_lose_nothing(
    pipeline: Pipeline,
) -> None:
    """Mosquitto 2.0.11 (Debian's) closes the old connection without MQTT 5's 'Session taken over'
    (0x8E; sent from 2.0.15 on), so this exercises the flap rule of twinpipe/takeover.py; the 0x8E
    rule is in tests/unit/test_takeover.py. Each bridge logs to its own file."""
    takeover_line = "taken over by another client with the same id"
    metric = "twinpipe_bridge_session_takeovers_total"
    first, first_port = ready_bridge(pipeline)
    publisher = pipeline.stage("publisher", {"publisher": {"simulator": {"rate_hz": 50, "devices": 2}}})
    poll(lambda: stage_metric(first_port, "twinpipe_bridge_records_delivered_total"), bool, 30, "records")
    second_port = free_port()
    (pipeline.workdir / "second").mkdir()
    second = StageProcess(
        "mqtt_kafka_bridge",
        pipeline.write_config({"health": {"port": second_port}}, name="second-bridge.yaml"),
        pipeline.workdir / "second",
        env=pipeline.stack.env(),
    ).start()
    pipeline.stages.append(second)
    overlap_started = time.monotonic()
    ports = {"first": first_port, "second": second_port}
    for name, port in ports.items():
        poll(lambda port=port: stage_metric(port, metric), bool, 30, f"the {name} bridge's takeover counted")
    # Both are losers in turn; each fails readiness naming the cause while this goes on.
    for name, port in ports.items():
        assert_not_ready_naming_takeover(port, "bridge.client_id", f"the {name} bridge")
    poll(
        lambda: sum(stage_metric(port, metric) for port in ports.values()),
        lambda n: n >= 5,
        60,
        "5 takeovers",
    )
    overlap_s = time.monotonic() - overlap_started
    takeovers = {name: stage_metric(port, metric) for name, port in ports.items()}
    assert second.stop() == 0, second.log()
    logs = {"first": first.log(), "second": second.log()}
    for name, text in logs.items():
        assert text.count(takeover_line) == 1, f"{name}: logged once, not per flap\n{text[-3000:]}"
        assert f"client id 'bridge-{pipeline.id}'" in text and "bridge.shared_group" in text
    connects = sum(text.count("connected to MQTT broker") for text in logs.values())
    # Without the backoff the two reconnect every 0.5 s: about 4 connections per second between them.
    assert connects <= 2 * STRIKES + overlap_s, (connects, overlap_s)

    assert publisher.stop() == 0
    published = int(publisher.log().rsplit("stopped: ", 1)[1].split()[0])
    records = pipeline.kafka_records(pipeline.telemetry_topic, published, timeout_s=90)
    keys = {(e.device, e.seq) for e in map(decode, (r.value for r in records))}
    assert len(keys) == published, "every reading reached Kafka"
    print(
        f"\ntwo bridges on one client id for {overlap_s:.0f} s: takeovers {takeovers}, {connects} connects, "
        f"{published} published, {len(records)} records ({len(records) - published} duplicates), 0 lost"
    )
    assert first.stop() == 0, first.log()
