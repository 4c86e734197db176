"""influx_ingestion against real Kafka-protocol broker and real influxd (through the v2 write shim)."""

from __future__ import annotations

import urllib.request

from kafka import KafkaProducer

from tests.harness import Pipeline, poll
from twinpipe.envelope import Envelope, encode

T0 = 1_700_000_000_000_000_000


def produce(pipeline: Pipeline, payloads: list[tuple[bytes | None, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=[pipeline.stack.kafka.bootstrap], acks="all")
    for key, value in payloads:
        producer.send(pipeline.telemetry_topic, key=key, value=value)
    producer.flush()
    producer.close()


def readings(device: str, seqs: range) -> list[tuple[bytes, bytes]]:
    return [
        (
            device.encode(),
            encode(Envelope(device, "boot-1", seq, T0 + seq * 1000, {"temperature": 20 + seq / 10})),
        )
        for seq in seqs
    ]


def test_points_use_event_time_and_redelivery_rewrites_the_same_points(pipeline: Pipeline) -> None:
    settings = {"ingestion": {"tags": {"site": "lab"}, "device_tags": {"d1": {"location": "wall"}}}}
    produce(pipeline, readings("d1", range(100)) + readings("d2", range(50)))
    ingestion = pipeline.stage("influx_ingestion", settings)
    poll(pipeline.influx_count, lambda n: n == 150, 30, "150 points")

    rows = pipeline.influx_rows('SELECT * FROM "telemetry" WHERE "device" = \'d1\' ORDER BY time')
    assert [row["seq"] for row in rows] == list(range(100))
    assert [row["time"] for row in rows] == [T0 + seq * 1000 for seq in range(100)]
    assert rows[7]["temperature"] == 20.7 and rows[7]["location"] == "wall" and rows[7]["site"] == "lab"
    assert ingestion.stop() == 0

    # The same records again (at-least-once upstream): still exactly one point per reading.
    produce(pipeline, readings("d1", range(100)))
    ingestion = pipeline.stage("influx_ingestion", settings)
    produce(pipeline, readings("d1", range(100, 110)))
    poll(pipeline.influx_count, lambda n: n == 160, 30, "160 points")
    assert (
        pipeline.influx_rows('SELECT count("seq") FROM "telemetry" WHERE "device" = \'d1\'')[0]["count"]
        == 110
    )
    assert ingestion.stop() == 0


def test_rejected_points_and_non_envelopes_go_to_the_dead_letter_topic(pipeline: Pipeline) -> None:
    # A field type conflict: "humidity" already exists as a string field in this measurement.
    write_v1 = f"{pipeline.stack.influxd.url}/write?db={pipeline.bucket}"
    line = f'telemetry,device=old humidity="damp" {T0 - 1}'.encode()
    urllib.request.urlopen(urllib.request.Request(write_v1, data=line, method="POST")).read()
    good = readings("d1", range(20))
    conflicting = (b"d9", encode(Envelope("d9", "b", 0, T0, {"humidity": 55.0})))
    produce(pipeline, [(b"x", b"garbage"), *good[:10], conflicting, *good[10:]])

    ingestion = pipeline.stage("influx_ingestion")
    dead = pipeline.kafka_records(pipeline.dead_letter_topic, 2)
    reasons = {r.value: dict(r.headers)["twinpipe.reason"].decode() for r in dead}
    assert len(dead) == 2
    assert reasons[b"garbage"].startswith("not a valid envelope: not JSON")
    assert reasons[conflicting[1]].startswith("rejected by InfluxDB: HTTP 422")
    assert "conflict" in reasons[conflicting[1]]
    poll(pipeline.influx_count, lambda n: n == 20, 30, "the 20 good points")  # the rest flowed on
    assert ingestion.stop() == 0


def test_wrong_token_commits_nothing_and_loses_nothing(pipeline: Pipeline) -> None:
    produce(pipeline, readings("d1", range(30)))
    wrong = pipeline.stage("influx_ingestion", env={"TWINPIPE__INFLUXDB__TOKEN": "wrong"})
    poll(
        wrong.log,
        lambda log: "HTTP 401" in log and "check influxdb.token" in log,
        30,
        "a clear 401 in the log",
    )
    assert wrong.stop() == 0
    assert pipeline.influx_count() == 0

    right = pipeline.stage("influx_ingestion")
    poll(pipeline.influx_count, lambda n: n == 30, 30, "all 30 points once the token is right")
    assert right.stop() == 0
