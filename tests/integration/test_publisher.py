"""publisher against a real Mosquitto: simulated boards, a pty board, a missing port, a broker outage."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from devstack.mosquitto import Mosquitto
from tests.harness import Pipeline, poll
from twinpipe.envelope import Envelope, decode


class Collector:
    """A persistent-session MQTT subscriber that keeps every envelope it receives."""

    def __init__(self, port: int, topic_filter: str, client_id: str) -> None:
        self.envelopes: list[Envelope] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe(topic_filter, qos=1)
        self.client.reconnect_delay_set(0.1, 0.5)
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 600
        self.client.connect("127.0.0.1", port, clean_start=False, properties=properties)
        self.client.loop_start()

    def _on_message(self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.envelopes.append(decode(message.payload))

    def seqs(self, device: str | None = None) -> list[int]:
        with self._lock:
            return sorted({e.seq for e in self.envelopes if device is None or e.device == device})

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_simulated_boards_publish_valid_envelopes(pipeline: Pipeline) -> None:
    collector = Collector(
        pipeline.stack.mosquitto.port, f"{pipeline.mqtt_prefix}/+/telemetry", f"c{pipeline.id}"
    )
    publisher = pipeline.stage("publisher", {"publisher": {"simulator": {"devices": 3, "rate_hz": 50}}})
    poll(
        lambda: [collector.seqs(f"sim-{i}")[:20] for i in (1, 2, 3)],
        lambda seqs: all(s == list(range(20)) for s in seqs),
        20,
        "20 readings from each of 3 boards",
    )
    assert publisher.stop() == 0
    first = collector.envelopes[0]
    assert set(first.values) == {"temperature", "humidity", "pressure"}
    assert first.trace["publish"] >= first.time_ns
    assert len({e.boot for e in collector.envelopes}) == 1
    collector.close()


def test_board_on_a_pty_that_appears_late_is_read_through_noise(pipeline: Pipeline) -> None:
    link = pipeline.workdir / "ttyNUCLEO"
    record = pipeline.workdir / "frames.jsonl"
    collector = Collector(
        pipeline.stack.mosquitto.port, f"{pipeline.mqtt_prefix}/+/telemetry", f"c{pipeline.id}"
    )
    serial = {"source": "serial", "serial": {"port": str(link), "reconnect_max_s": 0.3}}
    publisher = pipeline.stage("publisher", {"publisher": serial})
    poll(publisher.log, lambda log: "cannot open" in log, 15, "publisher reporting the missing port")

    pipeline.board(link, "--rate", "200", "--count", "300", "--noise-every", "50", "--record", str(record))
    poll(publisher.log, lambda log: "reading " in log, 15, "publisher opening the port")
    written = poll(
        lambda: [json.loads(line) for line in record.read_text().splitlines()],
        lambda frames: len(frames) == 300,
        15,
        "the simulator writing 300 frames",
    )
    # Frames sent before the port was opened are gone (pyserial flushes the input on open, as with a
    # real UART). Every frame after that must arrive, in order, with its exact values.
    last = written[-1]
    poll(lambda: collector.envelopes, lambda envs: any(e.values == last for e in envs), 30, "the last frame")
    by_seq = {e.seq: e.values for e in collector.envelopes}
    assert sorted(by_seq) == list(range(len(by_seq)))
    first = written.index(by_seq[0])
    # The next open attempt comes within 0.36 s (backoff ≤ 0.3 s + 20 % jitter): ≤ ~75 frames at 200/s.
    assert len(by_seq) == 300 - first >= 200, (first, len(by_seq))
    for seq, values in by_seq.items():
        assert values == pytest.approx(written[first + seq], abs=1e-9), seq
    assert publisher.log().count("cannot open") == 1, "a missing port is reported once, not per retry"
    assert "bad frame from nucleo-1: skipped" in publisher.log()
    assert publisher.stop() == 0
    collector.close()


def test_broker_outage_is_buffered_and_delivered_after_restart(pipeline: Pipeline, tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "own-broker")
    broker.start()
    try:
        collector = Collector(broker.port, f"{pipeline.mqtt_prefix}/+/telemetry", f"c{pipeline.id}")
        publisher = pipeline.stage(
            "publisher",
            {
                "mqtt": {"port": broker.port, "reconnect_max_s": 0.5},
                "publisher": {"simulator": {"rate_hz": 100}},
            },
        )
        poll(collector.seqs, lambda seqs: len(seqs) > 50, 20, "readings before the outage")
        broker.stop()
        poll(publisher.log, lambda log: "disconnected from MQTT broker" in log, 10, "publisher noticing")
        before = len(collector.seqs())
        broker.start()
        poll(collector.seqs, lambda seqs: len(seqs) > before + 300, 30, "backlog and new readings")
        assert publisher.stop() == 0
        seqs = collector.seqs()
        assert seqs == list(range(len(seqs))), "no reading lost across the broker restart"
        assert "buffer full" not in publisher.log() and "0 dropped on overflow" in publisher.log()
        collector.close()
    finally:
        broker.stop()


def test_cli_rejects_a_bad_config_naming_the_key(tmp_path: Path) -> None:
    import subprocess

    bad = tmp_path / "bad.yaml"
    bad.write_text("publisher:\n  source: usb\n  buffer_size: -1\n")
    result = subprocess.run(
        [sys.executable, "-m", "publisher", "--config", str(bad)], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "publisher.source: Input should be 'simulator' or 'serial', got 'usb'" in result.stderr
    assert "publisher.buffer_size" in result.stderr


def test_unplugged_board_is_reported_and_reading_resumes_when_it_returns(pipeline: Pipeline) -> None:
    link = pipeline.workdir / "ttyUSB0"
    collector = Collector(
        pipeline.stack.mosquitto.port, f"{pipeline.mqtt_prefix}/+/telemetry", f"c{pipeline.id}"
    )
    first_board = pipeline.board(link, "--rate", "100")
    poll(link.exists, bool, 10, "the first board's port")
    serial = {"source": "serial", "serial": {"port": str(link), "reconnect_max_s": 0.5}}
    publisher = pipeline.stage("publisher", {"publisher": serial})
    poll(collector.seqs, lambda seqs: len(seqs) >= 50, 20, "readings from the first plug-in")
    assert first_board.stop() == 0  # unplugged: the pty disappears
    poll(publisher.log, lambda log: "lost " in log and "cannot open" in log, 15, "the unplug reported")
    before = len(collector.seqs())

    record = pipeline.workdir / "replugged.jsonl"
    pipeline.board(link, "--rate", "100", "--record", str(record))
    poll(collector.seqs, lambda seqs: len(seqs) >= before + 50, 20, "readings after plugging back in")
    replugged = [json.loads(line) for line in record.read_text().splitlines()]
    assert sum(e.values in replugged for e in collector.envelopes[before:]) >= 40, "frames of the new board"
    assert publisher.running(), "an unplugged board never stops the publisher"
    assert publisher.log().count("cannot open") == 1
    assert publisher.stop() == 0
    collector.close()


def test_buffer_overflow_is_counted_and_logged(pipeline: Pipeline) -> None:
    from devstack.process import free_port

    nobody_listens = free_port()
    publisher = pipeline.stage(
        "publisher",
        {
            "mqtt": {"port": nobody_listens},
            "publisher": {"buffer_size": 20, "max_inflight": 5, "simulator": {"rate_hz": 200}},
        },
    )
    poll(publisher.log, lambda log: "buffer full (20 readings" in log, 20, "the overflow logged")
    assert publisher.stop() == 0
    summary = publisher.log().rsplit("stopped: ", 1)[1]
    dropped = int(summary.split(" dropped on overflow")[0].rsplit(", ", 1)[1])
    assert dropped > 0 and "0 published" in summary
    assert f"cannot connect to MQTT broker 127.0.0.1:{nobody_listens}; retrying" in publisher.log()


def test_a_publish_of_exactly_the_announced_maximum_packet_size_is_accepted(tmp_path: Path) -> None:
    """The publisher's packet size (publisher.outbox.publish_packet_size) never under-counts: a
    PUBLISH it sizes at exactly the broker's announced Maximum Packet Size is acknowledged."""
    from publisher.outbox import publish_packet_size

    broker = Mosquitto(tmp_path / "limited-broker", extra_config="max_packet_size 2048\n")
    broker.start()
    acks: list[int] = []
    limits: list[int] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.on_connect = lambda _c, _u, _f, _r, props: limits.append(props.MaximumPacketSize)
    client.on_publish = lambda _c, _u, _mid, reason, _p: acks.append(reason.value)
    try:
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        (limit,) = poll(lambda: limits, bool, 10, "CONNACK")
        topic = "twin/d1/telemetry"
        payload = max(n for n in range(limit) if publish_packet_size(topic.encode(), n) <= limit)
        assert publish_packet_size(topic.encode(), payload) == limit == 2048
        client.publish(topic, b"x" * payload, qos=1)
        assert poll(lambda: acks, bool, 10, "the PUBACK") == [0x10]  # success: no matching subscribers
    finally:
        client.loop_stop()
        client.disconnect()
        broker.stop()
