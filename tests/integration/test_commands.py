"""The way down, on real servers: a command produced to Kafka reaches a board and its evidence comes back.

These tests stand in for the twin state stage (which produces commands to `twin.commands` and
consumes `twin.command_events`) by producing commands to the command topic directly, malformed and
already expired ones among them, and reading the event topic; tests/integration/test_loop.py runs the
whole loop through the state stage's API, kill -9 of every stage included. Everything else is real:
Kafka (Tansu), Mosquitto, the bridge with its downlink, the publisher with its command session, and
the simulated boards (in-process, and the pty board `python -m publisher.simulate` on a serial port).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from devstack.command_loop import command_loop
from devstack.mosquitto import Mosquitto
from tests.harness import Pipeline, poll
from tests.integration.test_publisher import Collector


def commands_config(pipeline: Pipeline) -> dict[str, Any]:
    """Downlink and command session on this test's own topics."""
    config = command_loop(pipeline.mqtt_prefix, pipeline.id)
    del config["twin_state"]
    return config


def override(pipeline: Pipeline, extra: dict[str, Any]) -> dict[str, Any]:
    config = commands_config(pipeline)
    for section, keys in extra.items():
        config[section] = {**config.get(section, {}), **keys}
    return config


class Commands:
    """Produces commands to the command topic (as the state stage will) and reads the event topic."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.command_topic = f"cmd-{pipeline.id}"
        self.events_topic = f"cev-{pipeline.id}"
        bootstrap = [pipeline.stack.kafka.bootstrap]
        self._producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
        self._assigned = False
        self.events: list[dict[str, Any]] = []

    def send(self, device: str, settings: dict[str, Any], life_s: float, age_s: float = 0) -> str:
        """A command created `age_s` ago that expires `life_s` from now."""
        now = time.time_ns()
        command_id = uuid.uuid4().hex
        command = {
            "v": 1,
            "id": command_id,
            "device": device,
            "settings": settings,
            "desired_version": 1,
            "created_ns": now - int(age_s * 1e9),
            "expires_ns": now + int(life_s * 1e9),
        }
        self._producer.send(self.command_topic, key=device.encode(), value=json.dumps(command).encode())
        self._producer.flush(10)
        return command_id

    def send_raw(self, device: str, value: bytes) -> None:
        self._producer.send(self.command_topic, key=device.encode(), value=value)
        self._producer.flush(10)

    def _read(self) -> list[dict[str, Any]]:
        if not self._assigned:
            partitions = self._consumer.partitions_for_topic(self.events_topic)
            if not partitions:
                return self.events
            assigned = [TopicPartition(self.events_topic, p) for p in partitions]
            self._consumer.assign(assigned)
            self._consumer.seek_to_beginning(*assigned)
            self._assigned = True
        for batch in self._consumer.poll(timeout_ms=200).values():
            for record in batch:
                event = json.loads(record.value)
                assert record.key == event["device"].encode(), "events are keyed by device"
                self.events.append(event)
        return self.events

    def states(self, command_id: str) -> list[str]:
        return [event["state"] for event in self._read() if event["id"] == command_id]

    def wait_for(self, command_id: str, state: str, timeout_s: float = 20) -> dict[str, Any]:
        poll(
            lambda: self.states(command_id),
            lambda states: state in states,
            timeout_s,
            f"{command_id} {state}",
        )
        return next(e for e in self.events if e["id"] == command_id and e["state"] == state)

    def close(self) -> None:
        self._producer.close()
        self._consumer.close()


def test_heater_on_is_sent_delivered_written_acknowledged_and_the_simulated_board_warms_and_speeds_up(
    pipeline: Pipeline,
) -> None:
    """heater on + report_interval_s 0.2 to a simulated board (1 reading/s, temperature exactly 25.00):
    the events come back in order with the board's reported settings, then its temperature rises
    and it reports 5 times a second."""
    simulator = {
        "rate_hz": 1.0,
        "outlier_probability": 0.0,
        "heater_rise_per_s": 2.0,
        "sensors": {"temperature": {"mean": 25.0, "stddev": 0.0}, "humidity": {"mean": 50.0, "stddev": 0.0}},
    }
    config = override(pipeline, {})
    config["publisher"]["simulator"] = simulator
    collector = Collector(
        pipeline.stack.mosquitto.port, f"{pipeline.mqtt_prefix}/+/telemetry", f"c{pipeline.id}"
    )
    bridge = pipeline.stage("mqtt_kafka_bridge", config)
    publisher = pipeline.stage("publisher", config)
    commands = Commands(pipeline)
    try:
        poll(publisher.log, lambda log: "subscribed to 1 command topic" in log, 20, "the command session")
        poll(collector.seqs, lambda seqs: len(seqs) >= 2, 20, "readings before the command")
        assert {v["temperature"] for v in collector.values("sim-1")} == {25.0}
        command_id = commands.send("sim-1", {"heater": True, "report_interval_s": 0.2}, life_s=60)
        acknowledged = commands.wait_for(command_id, "acknowledged")
        assert acknowledged["reported"] == {"heater": True, "report_interval_s": 0.2}
        assert acknowledged["by"] == "publisher" and acknowledged["device"] == "sim-1"
        # `sent` comes from the bridge's downlink after the broker's PUBACK, the others from the
        # publisher through the uplink: two producers, so `sent` may land anywhere among them, even
        # after `acknowledged` on a loaded machine. delivered → written → acknowledged keep their order.
        sent = commands.wait_for(command_id, "sent")
        assert sent["by"] == "bridge" and sent["detail"] == ""
        states = commands.states(command_id)
        assert set(states) == {"sent", "delivered", "written", "acknowledged"}, states
        publisher_states = [s for s in states if s != "sent"]
        assert publisher_states == ["delivered", "written", "acknowledged"], states

        # Already expired when the bridge reads it: an `expired` event, never published. Malformed
        # commands and command events go to the dead-letter topic with the reason.
        late = commands.send("sim-1", {"heater": False}, life_s=-1, age_s=10)
        expired = commands.wait_for(late, "expired")
        assert expired["by"] == "bridge" and "before the bridge read it" in expired["detail"]
        commands.send_raw("sim-1", b'{"v": 1, "id": "x y", "device": "sim-1"}')
        mqtt_client = pipeline.mqtt_client()
        mqtt_client.publish(
            f"{pipeline.mqtt_prefix}/sim-1/command/events", b'{"v": 1, "state": "done"}', qos=1
        )
        letters = pipeline.kafka_records(pipeline.dead_letter_topic, 2)
        reasons = sorted(dict(r.headers)["twinpipe.reason"].decode() for r in letters)
        assert reasons[0].startswith("settings: expected a non-empty object"), reasons
        assert reasons[1].startswith("state: expected one of sent"), reasons
        mqtt_client.disconnect()

        at_ack = len(collector.seqs("sim-1"))
        poll(
            lambda: collector.values("sim-1")[at_ack:],
            lambda later: len(later) >= 10 and later[-1]["temperature"] >= 26.0,
            20,
            "the heated temperature",
        )
        later = collector.values("sim-1")[at_ack:]
        assert all(v["humidity"] == 50.0 for v in later), "the heater warms temperatures only"
        temperatures = [v["temperature"] for v in later]
        assert temperatures == sorted(temperatures), "rising while the heater is on"
        # 10 readings came within a few seconds of the command: the rate went up from 1/s.
        assert len(later) >= 10
        assert "failed" not in publisher.log()
        assert late not in publisher.log(), "the expired command never reached the publisher"
    finally:
        commands.close()
        collector.close()
    assert publisher.stop() == 0
    assert bridge.stop() == 0


def test_pty_board_command_waits_through_an_unplug_and_one_that_expires_meanwhile_is_never_written(
    pipeline: Pipeline,
) -> None:
    """A pty board at 1 frame/s (the Nucleo binary frames): a command while it is plugged in is
    acknowledged; unplugged, a command with 3 s of life expires while it waits (`expired`, and the
    board never sees it), and a command with 60 s of life is written after the replug."""
    link = pipeline.workdir / "ttyACM0"
    serial = {"source": "serial", "serial": {"port": str(link), "reconnect_max_s": 0.5}}
    config = override(pipeline, {"publisher": serial})
    board = pipeline.board(link, "--rate", "1")
    poll(link.exists, bool, 10, "the board's port")
    bridge = pipeline.stage("mqtt_kafka_bridge", config)
    publisher = pipeline.stage("publisher", config)
    commands = Commands(pipeline)
    try:
        poll(publisher.log, lambda log: "subscribed to 1 command topic" in log, 20, "the command session")
        first = commands.send("nucleo-1", {"heater": True}, life_s=60)
        assert commands.wait_for(first, "acknowledged")["reported"] == {"heater": True}

        assert board.stop() == 0  # unplugged: the pty disappears
        poll(publisher.log, lambda log: "lost " in log or "cannot open" in log, 15, "the unplug noticed")
        short = commands.send("nucleo-1", {"report_interval_s": 0.5}, life_s=3)
        waits = commands.send("nucleo-1", {"heater": False}, life_s=60)
        expired = commands.wait_for(short, "expired")
        assert expired["by"] == "publisher" and "never written" in expired["detail"]
        assert "written" not in commands.states(short)
        commands.wait_for(waits, "delivered")
        assert "written" not in commands.states(waits), "not written while the board is away"

        pipeline.board(link, "--rate", "1")  # plugged back in
        acknowledged = commands.wait_for(waits, "acknowledged")
        assert acknowledged["reported"] == {"heater": False}
        assert commands.states(waits).count("written") == 1
        written = next(e for e in commands.events if e["id"] == waits and e["state"] == "written")
        assert written["detail"] == "after waiting for the board"
        board_log = board.log()  # both plug-ins write to the same log
        assert f"command {first} heater=1 applied" in board_log
        assert f"command {waits} heater=0 applied" in board_log
        assert short not in board_log, "an expired command never reaches the board"
        # ACK lines are taken out before the frame decoder: no bad frame holds their bytes ("ACK ").
        bad_frames = [line for line in publisher.log().splitlines() if "bad frame" in line]
        assert not [line for line in bad_frames if "41 43 4b 20" in line or "noise so far" in line], (
            bad_frames
        )
    finally:
        commands.close()
    assert publisher.stop() == 0
    assert bridge.stop() == 0


def test_a_command_sent_while_the_publisher_is_away_arrives_after_a_broker_restart(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """The publisher is stopped; a command is sent (the broker queues it in the publisher's persistent
    command session: `sent`), the broker restarts (its persistence keeps the session), and the
    publisher, started again, gets it and the simulated board acknowledges it."""
    broker = Mosquitto(tmp_path / "own-broker")
    broker.start()
    try:
        config = override(pipeline, {"mqtt": {"port": broker.port, "reconnect_max_s": 0.5}})
        bridge = pipeline.stage("mqtt_kafka_bridge", config)
        publisher = pipeline.stage("publisher", config)
        commands = Commands(pipeline)
        try:
            poll(publisher.log, lambda log: "subscribed to 1 command topic" in log, 20, "the command session")
            assert publisher.stop() == 0
            command_id = commands.send("sim-1", {"heater": True}, life_s=120)
            assert commands.wait_for(command_id, "sent")["detail"] == "", "queued for the absent publisher"
            broker.stop()
            broker.start()  # same persistence file: the publisher's session and its queued command survive
            publisher = pipeline.stage("publisher", config)
            assert commands.wait_for(command_id, "acknowledged")["reported"] == {"heater": True}
            assert commands.states(command_id).count("delivered") == 1
        finally:
            commands.close()
        assert publisher.stop() == 0
        assert bridge.stop() == 0
    finally:
        broker.stop()
