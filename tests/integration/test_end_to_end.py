"""The whole pipeline on real servers: pty board → publisher → MQTT → bridge → Kafka → ingestion → Influx."""

from __future__ import annotations

import json
import time

import pytest

from tests.harness import Pipeline, poll

FRAMES = 1000


def test_every_reading_arrives_exactly_once_with_its_values_and_event_time(pipeline: Pipeline) -> None:
    link = pipeline.workdir / "ttyACM0"
    record = pipeline.workdir / "frames.jsonl"
    serial = {"publisher": {"source": "serial", "serial": {"port": str(link), "reconnect_max_s": 0.3}}}
    ingestion = pipeline.stage("influx_ingestion")
    bridge = pipeline.stage("mqtt_kafka_bridge")
    publisher = pipeline.stage("publisher", serial)
    for stage, ready in ((bridge, "connected to MQTT broker"), (publisher, "cannot open")):
        poll(stage.log, lambda log, ready=ready: ready in log, 20, f"{stage.module} ready")

    started_ns = time.time_ns()
    board = pipeline.board(
        link,
        "--rate",
        "200",
        "--count",
        str(FRAMES),
        "--noise-every",
        "100",
        "--record",
        str(record),
        "--seed",
        "1",
    )
    # A malformed payload in the middle of the stream goes to the dead-letter topic; the rest flows on.
    poll(pipeline.influx_count, lambda n: n > 100, 60, "the first points in InfluxDB")
    client = pipeline.mqtt_client()
    client.publish(
        f"{pipeline.mqtt_prefix}/nucleo-1/telemetry", b'{"v":1,"device":"nucleo-1"}', qos=1
    ).wait_for_publish(5)
    client.loop_stop()

    written = poll(
        lambda: [json.loads(line) for line in record.read_text().splitlines()],
        lambda frames: len(frames) == FRAMES,
        30,
        "the board writing every frame",
    )
    # Nothing confirms where a frame followed by noise ends (bytes lost inside it, or noise after it?):
    # the publisher drops and counts it rather than guess (publisher/README.md, "Frames").
    written = [frame for i, frame in enumerate(written) if (i + 1) % 100]
    rows = poll(
        lambda: pipeline.influx_rows('SELECT * FROM "telemetry" ORDER BY time'),
        lambda rows: (
            rows
            and rows[-1]["ambient_temperature"] == pytest.approx(written[-1]["ambient_temperature"])
            and rows[-1]["wall2_humidity"] == pytest.approx(written[-1]["wall2_humidity"])
        ),
        60,
        "the last frame in InfluxDB",
    )
    done_ns = time.time_ns()

    seqs = [row["seq"] for row in rows]
    assert seqs == list(range(len(rows))), "every (device, seq) once, in event-time order"
    first = next(
        i
        for i, frame in enumerate(written)
        if frame["ambient_temperature"] == rows[0]["ambient_temperature"]
        and frame["wall1_humidity"] == rows[0]["wall1_humidity"]
    )
    # Frames the board sent before the publisher's next open attempt (≤ 0.36 s at 200/s) are gone, as
    # with a real UART; every frame after that must be stored.
    assert len(rows) == len(written) - first and first <= 150, (
        "only frames sent before the port opened may be missing"
    )
    for row in rows:
        frame = written[first + row["seq"]]
        assert {name: row[name] for name in frame} == pytest.approx(frame, abs=1e-9)
        assert row["device"] == "nucleo-1"
        assert started_ns < row["time"] < done_ns
    assert len({row["boot"] for row in rows}) == 1

    dead = pipeline.kafka_records(pipeline.dead_letter_topic, 1)
    assert dict(dead[0].headers)["twinpipe.reason"].startswith(b"boot must match")
    for stage in (board, publisher, bridge, ingestion):
        assert stage.stop() == 0, stage.log()
    print(
        f"\nend to end: {len(rows)} readings stored exactly once, {FRAMES} written at 200/s, "
        f"{(done_ns - started_ns) / 1e9:.1f} s from first frame to last point visible"
    )
