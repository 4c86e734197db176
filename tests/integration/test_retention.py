"""Points older than the bucket's retention, interleaved with fresh ones, against real influxd behind
the InfluxDB 2 shim, whose bucket has a 1 h retention policy that really drops older points.

Measured: the write requests the shim received for the bucket. Before this change the ingestion split
a refused batch in halves down to single points: 3,999 requests for this 2,000-point batch.
"""

from __future__ import annotations

import time

import pytest
from kafka import KafkaProducer

from devstack.process import free_port, stage_metric
from tests.harness import Pipeline, poll
from twinpipe.config import InfluxConfig
from twinpipe.envelope import Envelope, encode
from twinpipe.influx import InfluxWriter, Rejected

RETENTION_S = 3600  # influxd's and InfluxDB 2's minimum
OLD = 1000
FRESH = 1000
MAX_REQUESTS = 5


def retention_bucket(pipeline: Pipeline) -> str:
    bucket = f"r{pipeline.id}"
    pipeline.stack.influx.add_bucket(bucket, RETENTION_S)
    return bucket


def interleaved(now_ns: int) -> list[tuple[bytes, bytes]]:
    """1,000 readings two hours old, each followed by a fresh one, all of one device (one partition)."""
    payloads = []
    for i in range(OLD):
        old = Envelope("replay", "b-old", i, now_ns - 2 * RETENTION_S * 10**9 - i * 10**6, {"t": 1.0})
        fresh = Envelope("replay", "b-new", i, now_ns - i * 10**6, {"t": 2.0})
        payloads += [(b"replay", encode(old)), (b"replay", encode(fresh))]
    return payloads


def produce(pipeline: Pipeline, payloads: list[tuple[bytes, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=[pipeline.stack.kafka.bootstrap], acks="all")
    for key, value in payloads:
        producer.send(pipeline.telemetry_topic, key=key, value=value)
    producer.flush()
    producer.close()


def stored(pipeline: Pipeline, bucket: str, boot: str) -> int:
    rows = pipeline.stack.influxd.rows(
        f'SELECT count("seq") FROM "telemetry" WHERE "boot" = \'{boot}\'', bucket
    )
    return rows[0]["count"] if rows else 0


@pytest.mark.parametrize(
    ("retention_s", "found_by"),
    [
        (None, "older than the bucket's retention (3600 s)"),  # read from the bucket, set aside
        (0, "partial write: points beyond retention policy dropped=1000"),  # left to InfluxDB
    ],
)
def test_old_points_interleaved_with_fresh_ones_take_a_few_requests_not_one_each(
    pipeline: Pipeline, retention_s: int | None, found_by: str
) -> None:
    bucket = retention_bucket(pipeline)
    port = free_port()
    produce(pipeline, interleaved(time.time_ns()))
    ingestion = pipeline.stage(
        "influx_ingestion",
        {
            "influxdb": {"bucket": bucket},
            # Collect the 2,000 records into one batch, as a backlog would.
            "ingestion": {"retention_s": retention_s, "flush_interval_s": 2.0},
            "health": {"port": port},
        },
    )
    dead = pipeline.kafka_records(pipeline.dead_letter_topic, OLD)
    poll(lambda: stored(pipeline, bucket, "b-new"), lambda n: n == FRESH, 30, "every fresh point")

    requests = pipeline.stack.influx.write_requests[bucket]
    print(f"\nretention_s={retention_s}: {requests} write requests for {OLD + FRESH} points")
    assert 1 <= requests <= MAX_REQUESTS
    assert stage_metric(port, "twinpipe_ingestion_write_requests_total") == requests
    assert stored(pipeline, bucket, "b-old") == 0
    assert len(dead) == OLD
    assert {dict(r.headers)["twinpipe.reason"].decode().count(found_by) for r in dead} == {1}
    assert all(b'"b-old"' in r.value for r in dead)
    assert stage_metric(port, "twinpipe_ingestion_dead_letters_total", kind="beyond_retention") == OLD
    assert stage_metric(port, "twinpipe_ingestion_dead_letters_total", kind="rejected") == 0
    assert stage_metric(port, "twinpipe_ingestion_points_written_total") == FRESH
    assert ingestion.stop() == 0


def test_the_shim_reports_bucket_retention_and_partial_writes_as_influxdb_2(pipeline: Pipeline) -> None:
    bucket = retention_bucket(pipeline)
    stack = pipeline.stack
    config = InfluxConfig(url=stack.influx.url, org="twinpipe", bucket=bucket, token=stack.token)
    writer = InfluxWriter(config)
    try:
        assert writer.bucket_retention_s() == RETENTION_S
        now = time.time_ns()
        with pytest.raises(Rejected) as caught:
            writer.write([f"m,device=d v=1 {now}", f"m,device=d v=2 {now - 2 * RETENTION_S * 10**9}"])
        assert str(caught.value).startswith(
            'HTTP 422: {"code": "unprocessable entity", "message": "failure writing points to database:'
            " partial write: points beyond retention policy dropped=1"
        )
        assert caught.value.partial is not None and caught.value.partial.dropped == 1
        assert stack.influxd.rows('SELECT "v" FROM "m"', bucket) == [{"time": now, "v": 1}]  # the rest stored
    finally:
        writer.close()
    forever = InfluxWriter(
        InfluxConfig(url=stack.influx.url, org="twinpipe", bucket=pipeline.bucket, token=stack.token)
    )
    try:
        assert forever.bucket_retention_s() == 0
    finally:
        forever.close()
