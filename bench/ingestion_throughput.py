"""Benchmark 3, ingestion throughput: points/s from Kafka into InfluxDB through influx_ingestion,
beside the same points posted as line protocol in 5,000-point batches straight to influxd (the
server's own limit here) and through the InfluxDB 2 shim the ingestion writes to."""

from __future__ import annotations

import time
import urllib.request
import uuid
from pathlib import Path

from kafka import KafkaProducer

from bench.common import payloads
from devstack.process import poll
from devstack.stack import LocalStack, merged, write_config
from devstack.stages import StageProcess
from twinpipe.envelope import decode

BATCH = 5000


def _fill_topic(stack: LocalStack, topic: str, messages: list[bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=[stack.kafka.bootstrap], linger_ms=20, batch_size=512 * 1024)
    for message in messages:
        producer.send(topic, message)
    producer.flush()
    producer.close()


def ingestion(stack: LocalStack, workdir: Path, count: int) -> dict:
    run = uuid.uuid4().hex[:8]
    topic, bucket = f"ingest-{run}", f"ib{run}"
    stack.influx.add_bucket(bucket)
    _fill_topic(stack, topic, payloads(count))
    settings = {
        "kafka": {"telemetry_topic": topic},
        "influxdb": {"bucket": bucket},
        "ingestion": {"group_id": f"bench-{run}"},
        "health": {"port": 0},
        "logging": {"level": "WARNING"},
    }
    config = write_config(workdir / f"ingestion-{run}.yaml", merged(stack.config(), settings))
    stage = StageProcess("influx_ingestion", config, workdir, env=stack.env()).start()
    try:
        first = poll(lambda: stack.influxd.point_count(bucket), bool, 60, "the first points")
        started = time.monotonic()
        poll(
            lambda: stack.influxd.point_count(bucket),
            lambda n: n >= count,
            300,
            f"{count} points",
            interval_s=0.05,
        )
        elapsed = time.monotonic() - started
    finally:
        stage.stop()
    return {
        "points": count - first,
        "seconds": round(elapsed, 3),
        "points_per_s": round((count - first) / elapsed),
    }


def _post(url: str, headers: dict[str, str], lines: list[bytes]) -> None:
    request = urllib.request.Request(url, data=b"\n".join(lines), method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 204


def direct(stack: LocalStack, count: int, through_shim: bool) -> dict:
    """The same points as the ingestion writes, posted in batches of 5,000 by one client."""
    from influx_ingestion.points import PointMapper

    bucket = f"db{uuid.uuid4().hex[:8]}"
    stack.influx.add_bucket(bucket)
    mapper = PointMapper("telemetry", {}, {})
    lines = [mapper.to_line(decode(message)).encode() for message in payloads(count)]
    if through_shim:
        url = f"{stack.influx.url}/api/v2/write?org={stack.influx.org}&bucket={bucket}&precision=ns"
        headers = {"Authorization": f"Token {stack.token}"}
    else:
        url, headers = f"{stack.influxd.url}/write?db={bucket}&precision=n", {}
    started = time.monotonic()
    for start in range(0, count, BATCH):
        _post(url, headers, lines[start : start + BATCH])
    elapsed = time.monotonic() - started
    assert stack.influxd.point_count(bucket) == count
    return {"points": count, "seconds": round(elapsed, 3), "points_per_s": round(count / elapsed)}
