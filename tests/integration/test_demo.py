"""`make demo` (devstack/demo.py) on servers of its own: every board's first reading is stored."""

from __future__ import annotations

import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from devstack import demo
from devstack.process import poll
from devstack.stack import LocalStack


def text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def test_the_demo_starts_the_publisher_once_the_bridge_has_subscribed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: the publisher started with the bridge, and Mosquitto dropped whatever it published
    before the bridge had subscribed (seq 0 of every board, often more).

    Kafka is held back until the bridge has tried to reach it, so the bridge cannot be ready (it
    subscribes after connecting to Kafka); a publisher started out of order publishes meanwhile,
    which the test waits to see before letting Kafka through. In order, no publisher runs yet.
    """
    with LocalStack(tmp_path / "servers", kafka_proxy=True) as stack:
        assert stack.kafka_proxy is not None
        stack.kafka_proxy.cut()
        seen: list[str] = []
        watcher = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        watcher.on_message = lambda _c, _u, message: seen.append(message.topic)
        watcher.connect("127.0.0.1", stack.mosquitto.port)
        watcher.loop_start()
        watcher.subscribe("twin/+/telemetry", qos=1)
        args = demo.parse_args(["--devices", "2", "--rate", "20", "--check", "10"])
        status: list[int] = []
        run = threading.Thread(target=lambda: status.append(demo.run(stack, tmp_path, args)))
        run.start()
        try:
            poll(
                lambda: text(tmp_path / "mqtt_kafka_bridge.log"),
                lambda log: "cannot connect to Kafka" in log,
                60,
                "the bridge trying Kafka",
            )
            if (tmp_path / "publisher.log").exists():  # started before the bridge could be ready
                poll(lambda: len(seen), bool, 30, "readings published while the bridge is not ready")
        finally:
            stack.kafka_proxy.restore()
            run.join(180)
            watcher.loop_stop()
        assert not run.is_alive()
        out = capsys.readouterr().out
        assert status == [0], out
        assert "sim-1: readings 0 .. 9 stored" in out and "sim-2: readings 0 .. 9 stored" in out
        assert "waiting for mqtt_kafka_bridge to be ready (subscribed) before the publisher starts" in out


def test_the_demo_replays_a_whole_pvlib_year_into_influxdb(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recording = Path(__file__).resolve().parents[2] / "recordings" / "sand-point-tmy3.csv"
    with LocalStack(tmp_path / "servers") as stack:
        args = demo.parse_args(["--replay", str(recording), "--speed", "0", "--check", "8760"])
        status = demo.run(stack, tmp_path, args)
        out = capsys.readouterr().out
        assert status == 0, out
        assert "sand-point: replayed readings 0 .. 8759 stored, tagged origin=replay" in out
        counts = stack.influxd.rows(
            'SELECT count("seq") FROM "telemetry" WHERE "device" = \'sand-point\' GROUP BY "origin"', "twin"
        )
        assert [row["count"] for row in counts] == [8760], "every row once, all tagged origin=replay"
