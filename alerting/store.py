"""The rule state's changelog: a compacted Kafka topic, read back when partitions are assigned.

Key = "<group id>/<input topic>/<device>", value = that device's state document (alerting.engine,
with the writer's `group`), written to
the state topic's partition with the input partition's number, so the replica that is assigned
input partition p reads state partition p and nothing else (quixstreams' and Kafka Streams' state
stores follow partitions the same way). The state topic therefore needs at least as many partitions
as each input topic; the stage checks that at start. Deployments with different `alerting.group_id`
may share the topic: each reads back only the records of its own group (records written before the
group was part of the key have none and are ignored: those alerts start afresh once).

Reading back stops at a marker record this reader writes first and then waits for: Tansu (the test
broker) misreports the end offset after batched produces, and a marker is exact on any Kafka.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

MARKER_KEY = b"\x00restore-marker"  # one key: compaction keeps a single marker per partition

Documents = dict[tuple[str, int], dict[str, dict[str, Any]]]  # (input topic, partition) → device → doc


class RestoreTimeout(Exception):
    pass


def read_states(
    consumer_factory: Callable[[], KafkaConsumer],
    producer: KafkaProducer,
    state_topic: str,
    partitions: list[int],
    timeout_s: float,
    group: str,
) -> tuple[Documents, int]:
    """Every device's latest state document in `partitions` of the state topic, and how many
    records were read. Raises RestoreTimeout when a marker did not come back within `timeout_s`."""
    if not partitions:
        return {}, 0
    token = uuid.uuid4().hex.encode()
    for partition in partitions:
        producer.send(state_topic, key=MARKER_KEY, value=token, partition=partition)
    producer.flush(timeout=timeout_s)
    consumer = consumer_factory()
    documents: Documents = {}
    waiting = set(partitions)
    read = 0
    try:
        assigned = [TopicPartition(state_topic, p) for p in partitions]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        deadline = time.monotonic() + timeout_s
        while waiting:
            if time.monotonic() > deadline:
                raise RestoreTimeout(
                    f"state topic {state_topic!r}: partitions {sorted(waiting)} not read back within"
                    f" {timeout_s:g} s (alerting.restore_timeout_s)"
                )
            for tp, records in consumer.poll(timeout_ms=200).items():
                for record in records:
                    read += 1
                    if record.key == MARKER_KEY:
                        if record.value == token:
                            waiting.discard(tp.partition)
                        continue
                    apply(documents, tp.partition, record.key, record.value, group)
    finally:
        consumer.close()
    return documents, read


def apply(documents: Documents, partition: int, key: bytes | None, value: bytes | None, group: str) -> None:
    """One state record into `documents`: the latest per key wins; a tombstone (no value) deletes.
    Records of another consumer group (or of none: written before the key held the group) are ignored."""
    prefix = f"{group}/".encode()
    if key is None or not key.startswith(prefix):
        return
    topic, _, device = key[len(prefix) :].decode(errors="replace").rpartition("/")
    if value is None:
        documents.get((topic, partition), {}).pop(device, None)
        return
    document = orjson.loads(value)
    if document.get("group") != group:
        return
    documents.setdefault((document["topic"], partition), {})[document["device"]] = document


def encode(document: dict[str, Any]) -> bytes:
    return orjson.dumps(document)
