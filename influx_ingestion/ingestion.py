"""Kafka → InfluxDB in three named steps: accumulate a batch, flush it, then commit its offsets.

Offsets are committed only after InfluxDB acknowledged the batch (and Kafka the batch's dead letters),
so a crash anywhere re-delivers records instead of losing them. While a flush is being retried, no
more records are fetched, so memory stays at one batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from influx_ingestion.points import PointMapper
from influx_ingestion.writer import Rejected, Unavailable
from twinpipe.backoff import Backoff
from twinpipe.config import Config
from twinpipe.envelope import EnvelopeError, decode
from twinpipe.health import Heartbeat
from twinpipe.ratelog import ThrottledLog

log = logging.getLogger("influx_ingestion")

STAGE = b"influx_ingestion"


@dataclass
class Batch:
    lines: list[str] = field(default_factory=list)
    sources: list[ConsumerRecord] = field(default_factory=list)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)


def dead_letter_headers(reason: str, record: ConsumerRecord) -> list[tuple[str, bytes]]:
    return [
        ("twinpipe.reason", reason.encode()),
        ("twinpipe.stage", STAGE),
        ("twinpipe.source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
    ]


class Ingestion:
    def __init__(
        self,
        config: Config,
        consumer: KafkaConsumer,
        write: Callable[[list[str]], None],
        dead_letters: KafkaProducer,
    ) -> None:
        self._config = config
        self._settings = config.ingestion
        self._consumer = consumer
        self._write = write
        self._dead_letters = dead_letters
        self._mapper = PointMapper(
            self._settings.measurement, self._settings.tags, self._settings.device_tags
        )
        self._throttled = ThrottledLog(log)
        # A flush may legitimately wait a full write timeout plus the longest backoff between beats.
        self.heartbeat = Heartbeat(max_age_s=config.influxdb.timeout_s + self._settings.retry_max_s + 30)
        self.points_written = 0
        self.dead_lettered = 0
        self.write_retries = 0

    def run(self, stop: threading.Event) -> None:
        settings = self._settings
        batch = Batch()
        while not stop.is_set():
            self.heartbeat.beat()
            wait_s = max(0.0, settings.flush_interval_s - (time.monotonic() - batch.started))
            polled = self._consumer.poll(
                timeout_ms=int(min(wait_s, 0.2) * 1000), max_records=settings.batch_size - len(batch.sources)
            )
            for records in polled.values():
                for record in records:
                    self.accumulate(batch, record)
            full = len(batch.sources) >= settings.batch_size
            due = time.monotonic() - batch.started >= settings.flush_interval_s
            if full or (due and batch.offsets):
                self.flush_and_commit(batch, stop, deadline=None)
                batch = Batch()
            elif due:
                batch.started = time.monotonic()
        deadline = time.monotonic() + settings.shutdown_timeout_s
        if batch.offsets:
            self.flush_and_commit(batch, stop, deadline)

    # --- step 1: accumulate ---

    def accumulate(self, batch: Batch, record: ConsumerRecord) -> None:
        try:
            line = self._mapper.to_line(decode(record.value or b""))
        except EnvelopeError as exc:
            self._dead_letter(record, f"not a valid envelope: {exc.reason}")
        else:
            batch.lines.append(line)
            batch.sources.append(record)
        batch.offsets[TopicPartition(record.topic, record.partition)] = record.offset + 1

    # --- step 2: flush ---

    def flush_and_commit(self, batch: Batch, stop: threading.Event, deadline: float | None) -> bool:
        """Write the batch (retrying until written, or until `deadline` once stopping), then commit."""
        backoff = Backoff(self._settings.retry_initial_s, self._settings.retry_max_s)
        while True:
            try:
                self._write_isolating_rejects(batch.lines, batch.sources)
                break
            except Unavailable as exc:
                self.heartbeat.beat()
                self.write_retries += 1
                delay = backoff.next_delay()
                if deadline is not None and time.monotonic() + delay > deadline:
                    log.warning(
                        "shutdown: %d points not written (%s); Kafka re-delivers them", len(batch.lines), exc
                    )
                    return False
                self._throttled.warning(
                    "unavailable", "InfluxDB write failed (%s); retrying in %.1f s", exc, delay
                )
                (stop.wait if deadline is None else time.sleep)(delay)
                if deadline is None and stop.is_set():
                    deadline = time.monotonic() + self._settings.shutdown_timeout_s
        self.points_written += len(batch.lines)
        return self._commit(batch)

    def _write_isolating_rejects(self, lines: list[str], sources: list[ConsumerRecord]) -> None:
        """Write; if InfluxDB rejects the content, split the batch until the bad points are isolated.

        Writes are idempotent, so rewriting the good half of a partly accepted batch is harmless.
        """
        if not lines:
            return
        try:
            self._write(lines)
        except Rejected as exc:
            if len(lines) == 1:
                self._dead_letter(sources[0], f"rejected by InfluxDB: {exc}")
                return
            middle = len(lines) // 2
            self._write_isolating_rejects(lines[:middle], sources[:middle])
            self._write_isolating_rejects(lines[middle:], sources[middle:])

    def _dead_letter(self, record: ConsumerRecord, reason: str) -> None:
        self.dead_lettered += 1
        self._throttled.warning(
            "dead-letter",
            "dead letter %s/%d/%d: %s; %d so far",
            record.topic,
            record.partition,
            record.offset,
            reason,
            self.dead_lettered,
        )
        self._dead_letters.send(
            self._config.kafka.dead_letter_topic,
            value=record.value,
            key=record.key,
            headers=dead_letter_headers(reason, record),
        )

    # --- step 3: commit ---

    def _commit(self, batch: Batch) -> bool:
        try:
            self._dead_letters.flush()  # dead letters must be safe before their offsets are committed
            self._consumer.commit(
                {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in batch.offsets.items()}
            )
        except CommitFailedError as exc:
            log.warning(
                "offset commit failed after a rebalance (%s); the new owner rewrites the same points", exc
            )
            return False
        except KafkaError as exc:
            log.warning("offset commit failed (%s); records will be re-delivered and rewritten", exc)
            return False
        return True
