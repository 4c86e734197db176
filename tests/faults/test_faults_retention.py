"""A replay older than the bucket's retention, interleaved with fresh readings, arriving in Kafka
while simulated boards stream through the whole pipeline into a bucket with a 1 h retention: the
boards' readings are stored exactly once, the replay's fresh readings are stored, its old ones are
dead-lettered as beyond retention, and no write request is spent isolating them.

Before: every batch holding old points was split in halves down to single points (3,999 requests for
1,000 old + 1,000 fresh points, 10 s of InfluxDB time here), stalling the boards' readings behind it.
"""

from __future__ import annotations

import time

from kafka import KafkaProducer

from devstack.process import stage_metric
from tests.faults.flow import Flow
from tests.faults.test_faults import assert_nothing_lost
from tests.harness import Pipeline, poll
from twinpipe.envelope import Envelope, encode

RETENTION_S = 3600
REPLAYED = 1000  # old readings, and as many fresh ones


def replay(pipeline: Pipeline) -> None:
    now_ns = time.time_ns()
    producer = KafkaProducer(bootstrap_servers=[pipeline.stack.kafka.bootstrap], acks="all")
    for i in range(REPLAYED):
        for boot, time_ns in (
            ("b-old", now_ns - 2 * RETENTION_S * 10**9 - i * 10**6),
            ("b-new", now_ns - i * 10**6),
        ):
            envelope = Envelope("replay", boot, i, time_ns, {"temperature": 20.0})
            producer.send(pipeline.telemetry_topic, key=b"replay", value=encode(envelope))
    producer.flush()
    producer.close()


def replay_stored(pipeline: Pipeline, boot: str) -> int:
    rows = pipeline.influx_rows(
        f'SELECT count("seq") FROM "telemetry" WHERE "device" = \'replay\' AND "boot" = \'{boot}\''
    )
    return rows[0]["count"] if rows else 0


def test_a_replay_beyond_retention_is_dead_lettered_without_stalling_the_boards(pipeline: Pipeline) -> None:
    pipeline.stack.influx.set_retention(pipeline.bucket, RETENTION_S)
    flow = Flow(pipeline)
    flow.start_all()
    port = flow.ports["influx_ingestion"]

    produced_before = flow.readings()
    started = time.monotonic()
    replay(pipeline)
    dead = pipeline.kafka_records(pipeline.dead_letter_topic, REPLAYED)
    poll(lambda: replay_stored(pipeline, "b-new"), lambda n: n == REPLAYED, 30, "the replay's fresh readings")
    recovery = flow.wait_recovered(produced_before, started)

    assert len(dead) == REPLAYED and all(b'"b-old"' in record.value for record in dead)
    assert all("retention" in dict(record.headers)["twinpipe.reason"].decode() for record in dead)
    assert replay_stored(pipeline, "b-old") == 0
    assert stage_metric(port, "twinpipe_ingestion_dead_letters_total", kind="beyond_retention") == REPLAYED

    # Every write request stored its whole batch: none was spent isolating refused points.
    # The boards keep writing meanwhile: read the stage's counters and the server's until one write
    # is not in flight between the reads.
    def counts() -> tuple[float, float, int]:
        requests = stage_metric(port, "twinpipe_ingestion_write_requests_total")
        batches = stage_metric(port, "twinpipe_ingestion_batch_size_points_count")
        return requests, batches, pipeline.stack.influx.write_requests[pipeline.bucket]

    requests, _, _ = poll(
        counts, lambda c: c[0] == c[1] == c[2], 10, "every write request stored its whole batch"
    )

    # The replay checked, the boards' books are kept as in every other scenario.
    pipeline.stack.influxd.query('DROP SERIES FROM "telemetry" WHERE "device" = \'replay\'', pipeline.bucket)
    observed = flow.finish("replay beyond retention (1,000 old + 1,000 fresh)", recovery)
    observed.notes.append(f"{REPLAYED} old readings dead-lettered, {int(requests)} write requests in all")
    assert_nothing_lost(observed, flow, pipeline, recovery)
