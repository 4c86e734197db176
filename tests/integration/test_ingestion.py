"""influx_ingestion against real Kafka-protocol broker and real influxd (through the v2 write shim)."""

from __future__ import annotations

import json
import time
import urllib.request

from kafka import KafkaProducer

from devstack.process import free_port, http_get, stage_metric, stage_ready
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


def dead_letter_reasons(pipeline: Pipeline, expected: int) -> dict[bytes, str]:
    dead = pipeline.kafka_records(pipeline.dead_letter_topic, expected)
    assert len(dead) == expected, [r.value for r in dead]
    return {r.value: dict(r.headers)["twinpipe.reason"].decode() for r in dead}


def test_names_and_times_that_cannot_be_stored_right_are_refused_at_the_door(pipeline: Pipeline) -> None:
    port = free_port()
    now_ns = time.time_ns()
    base = {"v": 1, "boot": "b1", "seq": 0, "time_ns": T0, "values": {"temperature": 20.0}}

    def raw(**changes: object) -> tuple[bytes, bytes]:
        payload = {**base, "device": "d1", **changes}
        return str(payload["device"]).encode(), json.dumps(payload).encode()

    refused = {
        # A value named like the device tag hid the tag: every WHERE "device" = ... found nothing.
        raw(seq=1, values={"device": 1.0}): "value name 'device' is reserved",
        raw(seq=2, values={"time": 2.0}): "value name 'time' is reserved",  # InfluxDB dropped it
        raw(seq=3, values={"site": 3.0}): "['site'] are tag keys of this series",  # a configured tag
        raw(device="dev\n", seq=4): "device id 'dev\\n' must match",  # was stored as dev\n, 4 chars
        raw(seq=5, values={"t\n": 1.0}): "value name 't\\n' must match",
        raw(seq=6, time_ns=now_ns // 10**9): "looks like seconds",
        raw(seq=7, time_ns=now_ns // 10**6): "looks like milliseconds",
        raw(seq=8, time_ns=now_ns // 10**3): "looks like microseconds",
        raw(seq=9, time_ns=now_ns + 7200 * 10**9): "after its arrival",
    }
    stored = [
        raw(seq=10, time_ns=T0 + 10),
        raw(seq=11, time_ns=T0 + 11, firmware="2.1"),  # an unknown key: ignored, not a dead letter
        raw(device="_probe", seq=12, time_ns=T0 + 12),  # the latency probe's reserved device
        raw(seq=13, time_ns=now_ns - 9 * 86400 * 10**9),  # a spool backlog nine days old
        raw(seq=14, time_ns=T0 + 10, boot="b2"),  # same device and time as seq 10: one point, counted
    ]
    produce(pipeline, [*refused, *stored])
    ingestion = pipeline.stage(
        "influx_ingestion", {"ingestion": {"tags": {"site": "lab"}}, "health": {"port": port}}
    )

    reasons = dead_letter_reasons(pipeline, len(refused))
    for (_, payload), expected in refused.items():
        assert expected in reasons[payload], (payload, reasons[payload])
    poll(pipeline.influx_count, lambda n: n == 4, 30, "4 points (5 stored readings, two at one time)")
    rows = pipeline.influx_rows('SELECT * FROM "telemetry" WHERE "device" = \'d1\' ORDER BY time')
    assert [(row["boot"], row["seq"]) for row in rows] == [("b2", 14), ("b1", 11), ("b1", 13)]
    assert "firmware" not in rows[0]
    assert (
        pipeline.influx_rows('SELECT count("seq") FROM "telemetry" WHERE "device" = \'_probe\'')[0]["count"]
        == 1
    )
    assert stage_metric(port, "twinpipe_ingestion_points_overwritten_total") == 1
    assert stage_metric(port, "twinpipe_ingestion_envelopes_with_unknown_keys_total") == 1
    assert stage_metric(port, "twinpipe_ingestion_dead_letters_total", kind="implausible_time") == 4
    assert stage_metric(port, "twinpipe_ingestion_dead_letters_total", kind="invalid") == 5
    # The 9-day backlog is stored but is no latency: counted, not observed.
    assert (
        stage_metric(port, "twinpipe_ingestion_clock_anomalies_total", delay="end_to_end", kind="absurd") >= 1
    )
    assert ingestion.stop() == 0


def test_not_ready_while_influxdb_rejects_every_point_and_ready_again_once_writes_succeed(
    pipeline: Pipeline,
) -> None:
    write_v1 = f"{pipeline.stack.influxd.url}/write?db={pipeline.bucket}"
    line = f'telemetry,device=old temperature="warm" {T0 - 1}'.encode()  # a string field: floats conflict
    urllib.request.urlopen(urllib.request.Request(write_v1, data=line, method="POST")).read()
    port = free_port()
    ingestion = pipeline.stage("influx_ingestion", {"health": {"port": port}})
    poll(lambda: stage_ready(port), bool, 30, "ready before any input")

    produce(pipeline, readings("d1", range(12)))  # every point hits the type conflict
    status, body = poll(
        lambda: http_get(f"http://127.0.0.1:{port}/readyz"),
        lambda r: r[0] == 503 and "the last 12 points" in r[1],  # not ready from the 10th on
        30,
        "/readyz failing after all 12 points",
    )
    report = json.loads(body)
    assert report["failing"] == ["points_stored"]
    assert "the last 12 points were all refused" in report["reasons"]["points_stored"]
    assert "field type conflict" in report["reasons"]["points_stored"]

    good = [
        (b"d1", encode(Envelope("d1", "boot-2", seq, T0 + 10**6 + seq, {"pressure": 1013.0})))
        for seq in range(3)
    ]
    produce(pipeline, good)
    poll(lambda: stage_ready(port), bool, 30, "ready again once a write succeeds")
    assert pipeline.influx_count() == 3
    assert ingestion.stop() == 0
