"""publisher against a real Mosquitto: simulated boards, a pty board, a missing port, a broker outage."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from devstack.mosquitto import Mosquitto
from devstack.process import free_port, stage_metric
from devstack.stages import StageProcess
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

    def values(self, device: str) -> list[dict[str, float]]:
        """The device's readings in seq order, each once (QoS 1 may deliver one twice)."""
        with self._lock:
            by_seq = {e.seq: e.values for e in self.envelopes if e.device == device}
        return [by_seq[seq] for seq in sorted(by_seq)]

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
    health_port = free_port()
    publisher = pipeline.stage("publisher", {"publisher": serial, "health": {"port": health_port}})
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
    # real UART). Every frame after that must arrive, in order, with its exact values, except the one
    # right before each noise burst: nothing confirms where it ends (bytes lost inside it, or noise
    # after it?), so it is dropped and counted rather than guessed.
    last = written[-2]  # the last frame is followed by noise too
    poll(lambda: collector.envelopes, lambda envs: any(e.values == last for e in envs), 30, "the last frame")
    by_seq = {e.seq: e.values for e in collector.envelopes}
    assert sorted(by_seq) == list(range(len(by_seq)))
    first = written.index(by_seq[0])
    expected = [frame for i, frame in enumerate(written) if i >= first and (i + 1) % 50]
    # The next open attempt comes within 0.36 s (backoff ≤ 0.3 s + 20 % jitter): ≤ ~75 frames at 200/s.
    assert len(by_seq) == len(expected) >= 195, (first, len(by_seq))
    for seq, values in by_seq.items():
        assert values == pytest.approx(expected[seq], abs=1e-9), seq
    assert publisher.log().count("cannot open") == 1, "a missing port is reported once, not per retry"
    assert "bad frame from nucleo-1: skipped" in publisher.log()
    assert "not followed by the next frame's sync" in publisher.log()
    frame_errors = "twinpipe_publisher_frame_errors_total"
    # Each noise burst after the first published frame: the frame before it (unconfirmed) and the burst
    # itself (noise; the last one ends the stream and is reported at the quiet gap after it).
    bursts = sum(1 for i in range(first, 300) if (i + 1) % 50 == 0)
    assert stage_metric(health_port, frame_errors, kind="unconfirmed") == bursts >= 4
    poll(
        lambda: stage_metric(health_port, frame_errors, kind="noise"), lambda n: n >= bursts, 5, "noise runs"
    )
    assert stage_metric(health_port, frame_errors, kind="ambiguous") == 0
    assert publisher.stop() == 0
    collector.close()


def stage_with_own_log(
    pipeline: Pipeline, module: str, name: str, override: dict[str, Any], *args: str
) -> StageProcess:
    """A stage (or a board) whose log is its own, for tests that run several of one module."""
    logs = pipeline.workdir / name
    logs.mkdir()
    config = pipeline.write_config(override, name=f"{name}.yaml")
    process = StageProcess(module, config, logs, *args, env=pipeline.stack.env())
    pipeline.stages.append(process)
    return process.start()


SLOW_FRAMES = 12


def test_boards_at_one_frame_per_second_publish_every_frame_in_every_format(pipeline: Pipeline) -> None:
    """The issue's 1 frame/s board: every frame is published, in the binary Nucleo frame and in the
    line formats, the first one after the port opened included. The four boards run at once."""
    collector = Collector(
        pipeline.stack.mosquitto.port, f"{pipeline.mqtt_prefix}/+/telemetry", f"c{pipeline.id}"
    )
    boards = {}
    for fmt in ("binary", "json", "csv", "kv"):
        link = pipeline.workdir / f"tty-{fmt}"
        frame = {"format": fmt}
        serial = {"port": str(link), "reconnect_max_s": 0.3, "device_id": f"slow-{fmt}", "frame": frame}
        publisher = stage_with_own_log(
            pipeline, "publisher", f"publisher-{fmt}", {"publisher": {"source": "serial", "serial": serial}}
        )
        boards[fmt] = (link, publisher)
    for fmt, (link, publisher) in boards.items():
        poll(publisher.log, lambda log: "cannot open" in log, 20, f"the {fmt} publisher waiting for its port")
        record = pipeline.workdir / f"{fmt}.jsonl"
        stage_with_own_log(
            pipeline,
            "publisher.simulate",
            f"board-{fmt}",
            {"publisher": {"serial": {"frame": {"format": fmt}}}},
            "--pty",
            str(link),
            "--rate",
            "1",
            "--count",
            str(SLOW_FRAMES),
            "--record",
            str(record),
        )
    for fmt in boards:
        record = pipeline.workdir / f"{fmt}.jsonl"
        written = poll(
            lambda record=record: record.read_text().splitlines() if record.exists() else [],
            lambda lines: len(lines) == SLOW_FRAMES,
            SLOW_FRAMES + 20,
            f"the {fmt} board writing {SLOW_FRAMES} frames",
        )
        written = [json.loads(line) for line in written]
        device = f"slow-{fmt}"
        published = poll(
            lambda device=device: collector.values(device),
            lambda values, last=written[-1]: bool(values) and values[-1] == pytest.approx(last, abs=1e-9),
            10,
            f"the last {fmt} frame published",
        )
        # At most the frames written before the publisher opened the port (it retries every ≤ 0.36 s).
        first = len(written) - len(published)
        assert first <= 2 and len(published) >= 10, (fmt, first)
        for values, frame in zip(published, written[first:], strict=True):
            assert values == pytest.approx(frame, abs=1e-9), fmt
    for fmt, (_, publisher) in boards.items():
        log = publisher.log()
        assert "incomplete" not in log and "bad frame" not in log, (fmt, log[-2000:])
    collector.close()


def test_a_board_at_1000_frames_per_second_publishes_every_frame_after_the_open(pipeline: Pipeline) -> None:
    link = pipeline.workdir / "ttyFAST"
    record = pipeline.workdir / "fast.jsonl"
    collector = Collector(
        pipeline.stack.mosquitto.port, f"{pipeline.mqtt_prefix}/+/telemetry", f"c{pipeline.id}"
    )
    serial = {"source": "serial", "serial": {"port": str(link), "reconnect_max_s": 0.3}}
    publisher = pipeline.stage("publisher", {"publisher": serial})
    poll(publisher.log, lambda log: "cannot open" in log, 15, "publisher waiting for the port")
    pipeline.board(link, "--rate", "1000", "--count", "3000", "--record", str(record), "--seed", "3")
    written = poll(
        lambda: record.read_text().splitlines() if record.exists() else [],
        lambda lines: len(lines) == 3000,
        30,
        "the board writing 3000 frames",
    )
    written = [json.loads(line) for line in written]
    published = poll(
        lambda: collector.values("nucleo-1"),
        lambda values: bool(values) and values[-1] == pytest.approx(written[-1], abs=1e-9),
        30,
        "the last frame published",
    )
    first = len(written) - len(published)
    assert first <= 1000, "only frames written before the port was opened (≤ 0.36 s + start-up) are missing"
    assert published == [pytest.approx(frame, abs=1e-9) for frame in written[first:]]
    assert publisher.stop() == 0
    collector.close()


def test_a_second_publisher_cannot_open_a_board_already_being_read(pipeline: Pipeline) -> None:
    """Two readers of one tty split its bytes and would publish spliced frames. The port is opened
    exclusively: the second publisher says why it cannot open it and retries like for an unplugged
    board, so it reads the board once the first one has gone, and never publishes a spliced frame."""
    link = pipeline.workdir / "ttySHARED"
    record = pipeline.workdir / "shared.jsonl"
    collector = Collector(
        pipeline.stack.mosquitto.port, f"{pipeline.mqtt_prefix}/+/telemetry", f"c{pipeline.id}"
    )
    pipeline.board(link, "--rate", "100", "--record", str(record))
    poll(link.exists, bool, 10, "the board's port")
    serial = {"source": "serial", "serial": {"port": str(link), "reconnect_max_s": 0.3}}
    first = stage_with_own_log(
        pipeline,
        "publisher",
        "first",
        {"publisher": {**serial, "serial": {**serial["serial"], "device_id": "first"}}},
    )
    poll(
        lambda: collector.seqs("first"), lambda seqs: len(seqs) >= 20, 20, "readings from the first publisher"
    )
    second = stage_with_own_log(
        pipeline,
        "publisher",
        "second",
        {"publisher": {**serial, "serial": {**serial["serial"], "device_id": "second"}}},
    )
    message = f"cannot open {link} (PortBusy: {link} is already open in another process"
    poll(second.log, lambda log: message in log, 20, "the second publisher reporting the busy port")
    before = len(collector.seqs("first"))
    poll(
        lambda: collector.seqs("first"),
        lambda seqs: len(seqs) >= before + 100,
        20,
        "the first one reading on",
    )
    assert collector.seqs("second") == [], "the second publisher read nothing while the first held the port"
    assert first.stop() == 0
    poll(lambda: collector.seqs("second"), lambda seqs: len(seqs) >= 50, 20, "the second one taking over")
    assert second.running() and second.log().count("cannot open") == 1, "reported once, retried quietly"
    for device in ("first", "second"):
        values = collector.values(device)
        # The board records a frame after writing it to the tty: the last published may not be in the
        # record yet.
        written = poll(
            lambda: [json.loads(line) for line in record.read_text().split("\n")[:-1]],  # whole lines
            lambda frames, last=values[-1]: any(frame == pytest.approx(last, abs=1e-9) for frame in frames),
            10,
            f"{device}'s last published frame in the board's record",
        )
        start = written.index(values[0])
        assert values == [pytest.approx(frame, abs=1e-9) for frame in written[start : start + len(values)]], (
            f"{device}: every published reading is a frame the board sent, in order, none spliced"
        )
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
    assert "publisher.source: Input should be 'simulator', 'serial' or 'replay', got 'usb'" in result.stderr
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
    # A replugged board has reset: its readings carry a new boot id, seq from 0 (twin_state re-sends
    # its settings on that), and event times go on increasing.
    old_boot, new_boot = collector.envelopes[0].boot, collector.envelopes[-1].boot
    assert new_boot != old_boot and {e.boot for e in collector.envelopes} == {old_boot, new_boot}
    after = [e for e in collector.envelopes if e.boot == new_boot]
    assert [e.seq for e in after] == list(range(len(after)))
    times = [e.time_ns for e in collector.envelopes]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert f"taken as a restarted board, its readings now carry boot {new_boot}" in publisher.log()
    assert publisher.running(), "an unplugged board never stops the publisher"
    assert publisher.log().count("cannot open") == 1
    assert publisher.stop() == 0
    collector.close()


def test_buffer_overflow_is_counted_and_logged(pipeline: Pipeline) -> None:
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
