"""Wiring of the twin state stage to Kafka: rebuild from the compacted state topic, accept desired
settings as commands, consume commands, command events and telemetry, expire on a timer, persist.

At-least-once: a poll's records are applied, the changed devices' states produced to the state topic
and flushed, and only then are the consumer offsets committed. A restart replays what was not
committed; the lifecycle functions make the replay change nothing twice.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from twin_state import metrics
from twin_state.codec import StateError, decode_state, encode_state
from twin_state.store import Twin
from twinpipe import deadletter
from twinpipe.clients import ensure_topics, kafka_consumer, kafka_producer
from twinpipe.command_messages import CommandError, decode_command, decode_event, encode_command, new_command
from twinpipe.config import Config
from twinpipe.envelope import EnvelopeError, decode
from twinpipe.eventtime import EventTimeWindow, arrival_ns
from twinpipe.health import Heartbeat
from twinpipe.model import TwinModel
from twinpipe.ratelog import ThrottledLog

log = logging.getLogger("twinpipe.twin_state")
MARKER_PREFIX = b"\x00twin_state-marker:"
STAGE = "twin_state"


class Unavailable(Exception):
    """Kafka did not take a command or a state in time; the message says which and why."""


class TwinStateStage:
    def __init__(self, config: Config, twin: Twin, model: TwinModel) -> None:
        self.config = config
        self.settings = config.twin_state
        self.twin = twin
        self.model = model
        self.heartbeat = Heartbeat(max_age_s=60)
        self.rebuilt = threading.Event()
        self.consuming = threading.Event()
        self._producer: KafkaProducer | None = None
        self._consumer: KafkaConsumer | None = None
        self._throttled = ThrottledLog(log, interval_s=30)
        self._event_times = EventTimeWindow(config.ingestion)
        self._persisting = threading.Lock()  # states reach the topic in the order they were made

    # --- lifecycle ---

    def __enter__(self) -> TwinStateStage:
        return self

    def open(self) -> int:
        """Create the topics, connect the producer and rebuild (`rebuild`); returns the devices read.
        Raises KafkaError or Unavailable while Kafka cannot be reached: the caller retries."""
        self._create_topics()
        if self._producer is None:
            self._producer = kafka_producer(self.config.kafka, linger_ms=5)
        return self.rebuild(timeout_s=60)

    def __exit__(self, *exc_info: object) -> None:
        if self._consumer is not None:
            self._consumer.close(autocommit=False)
        if self._producer is not None:
            self._producer.close(timeout=10)

    def _create_topics(self) -> None:
        kafka = self.config.kafka
        ensure_topics(kafka, [self.settings.command_topic, self.settings.event_topic, kafka.telemetry_topic])
        if not kafka.create_topics:
            return
        admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers, **kafka.security())
        try:
            if self.settings.state_topic not in admin.list_topics():
                topic = NewTopic(
                    self.settings.state_topic,
                    kafka.partitions,
                    kafka.replication_factor,
                    topic_configs={"cleanup.policy": "compact"},
                )
                with contextlib.suppress(TopicAlreadyExistsError):  # another replica made it meanwhile
                    admin.create_topics([topic])
        finally:
            admin.close()

    # --- rebuilding from the state topic ---

    def rebuild(self, timeout_s: float = 120.0) -> int:
        """Read the state topic to its end into the twin; returns the number of devices.

        The end is a marker record this call produces into every partition (followed by a tombstone
        of the same key, so compaction removes both): end offsets are not trusted, since some brokers
        report them wrong after batched produces."""
        assert self._producer is not None
        topic = self.settings.state_topic
        kafka = self.config.kafka
        consumer = KafkaConsumer(
            bootstrap_servers=kafka.bootstrap_servers,
            **kafka.security(),
            group_id=None,
            enable_auto_commit=False,
        )
        try:
            deadline = time.monotonic() + timeout_s
            while not (partitions := consumer.partitions_for_topic(topic)):
                if time.monotonic() > deadline:
                    raise Unavailable(f"state topic {topic!r} has no partitions after {timeout_s} s")
                time.sleep(0.2)
            marker = MARKER_PREFIX + uuid.uuid4().hex.encode()
            for partition in partitions:
                self._producer.send(topic, key=marker, value=b"{}", partition=partition)
                self._producer.send(topic, key=marker, value=None, partition=partition)
            self._producer.flush(timeout=self.settings.kafka_timeout_s)
            assigned = [TopicPartition(topic, p) for p in partitions]
            consumer.assign(assigned)
            consumer.seek_to_beginning(*assigned)
            waiting = set(partitions)
            while waiting:
                if time.monotonic() > deadline:
                    raise Unavailable(f"state topic {topic!r}: no end marker in partitions {sorted(waiting)}")
                for tp, records in consumer.poll(timeout_ms=500).items():
                    for record in records:
                        if record.key == marker:
                            waiting.discard(tp.partition)
                        elif record.key and not record.key.startswith(MARKER_PREFIX):
                            self._load(record)
        finally:
            consumer.close()
        self.twin.take_dirty(everything=True)
        self.rebuilt.set()
        log.info("rebuilt the state of %d devices from %s", len(self.twin.states), topic)
        return len(self.twin.states)

    def _load(self, record: Any) -> None:
        device = record.key.decode(errors="replace")
        if record.value is None:
            self.twin.load(device, None)
            return
        try:
            document = decode_state(record.value)
        except StateError as exc:
            log.error(
                "state topic %s/%d/%d: skipped: %s",
                record.topic,
                record.partition,
                record.offset,
                exc,
            )
            return
        self.twin.load(device, document)

    # --- accepting desired settings ---

    def accept(
        self, device: str, settings: dict[str, Any], expires_in_s: float, reason: str = ""
    ) -> dict[str, Any]:
        """Write a command for `settings` to the command topic and, once Kafka acknowledged it, take
        it into the journal as queued and persist the state. Returns the journal entry.
        Raises Unavailable when Kafka does not acknowledge within twin_state.kafka_timeout_s."""
        assert self._producer is not None
        with self.twin.lock:
            now = time.time_ns()
            command = new_command(
                device, settings, self.twin.desired_version(device) + 1, now, now + int(expires_in_s * 1e9)
            )
            try:
                self._producer.send(
                    self.settings.command_topic, key=device.encode(), value=encode_command(command)
                ).get(timeout=self.settings.kafka_timeout_s)
            except KafkaError as exc:
                raise Unavailable(f"command topic {self.settings.command_topic!r}: {exc}") from None
            self.twin.queue(command.to_json(), time.time_ns(), reason)
            entry = self.twin.command(command.id)
        self.persist()
        assert entry is not None
        return entry

    # --- consuming ---

    def run(self, stop: threading.Event) -> None:
        """Consume until `stop` is set; expire on the timer between polls."""
        kafka = self.config.kafka
        topics = [self.settings.command_topic, self.settings.event_topic, kafka.telemetry_topic]
        self._consumer = kafka_consumer(kafka, self.settings.group_id, auto_offset_reset="earliest")
        self._consumer.subscribe(topics)
        next_tick = 0.0
        while not stop.is_set():
            self.heartbeat.beat()
            batches = self._consumer.poll(
                timeout_ms=int(self.settings.expiry_check_s * 1000), max_records=2000
            )
            if self._consumer.assignment():
                self.consuming.set()
            for records in batches.values():
                for record in records:
                    self._take(record)
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + self.settings.expiry_check_s
                self.twin.tick(time.time_ns())
                metrics.gauge_open(self.twin.open_commands())
            if self.persist() and batches:
                self._commit(self._consumer)

    def _commit(self, consumer: KafkaConsumer) -> None:
        try:
            consumer.commit()
        except KafkaError as exc:  # a rebalance: the records are replayed, harmlessly
            self._throttled.warning("commit", "offset commit failed (records will be replayed): %s", exc)

    def _take(self, record: Any) -> None:
        topic = record.topic
        if topic == self.config.kafka.telemetry_topic:
            self._reading(record)
            return
        kind = "command" if topic == self.settings.command_topic else "event"
        try:
            if kind == "command":
                self.twin.queue(decode_command(record.value).to_json(), time.time_ns())
            else:
                self.twin.event(decode_event(record.value).to_json())
        except CommandError as exc:
            self._dead_letter(record, kind, str(exc))

    def _reading(self, record: Any) -> None:
        try:
            envelope = decode(record.value or b"")
        except EnvelopeError:
            return  # the ingestion dead-letters telemetry; the twin only follows valid readings
        names = self.model.settings(envelope.device)
        if not names:
            return  # only devices with settings have a twin state
        refused = self._refused(envelope.device, envelope.values, envelope.time_ns, record.timestamp)
        if refused:
            # What the ingestion dead-letters is not the board's state: neither its values nor its
            # boot id (another producer's reading must not pass for a board restart).
            metrics.READINGS_SKIPPED.labels(refused[0]).inc()
            self._throttled.warning(
                f"skip-{refused[0]}", "%s: reading not taken into the twin: %s", envelope.device, refused[1]
            )
            return
        lost = self.twin.boot(envelope.device, envelope.boot, envelope.time_ns)
        if lost:
            self._resend(envelope.device, envelope.boot, lost)
        values = {k: v for k, v in envelope.values.items() if k not in names}
        if values:
            self.twin.readings(envelope.device, values, envelope.time_ns)

    def _refused(
        self, device: str, values: dict[str, float], time_ns: int, timestamp_ms: int | None
    ) -> tuple[str, str] | None:
        """(kind, reason) when the ingestion would dead-letter this reading (event time outside its
        window against the record's Kafka timestamp, or a value outside its datastream's range), else
        None."""
        problem = self._event_times.problem(time_ns, arrival_ns(timestamp_ms))
        if problem is not None:
            return "implausible_time", problem
        wrong = self.model.range_problem(device, values)
        return ("out_of_range", wrong) if wrong else None

    def _resend(self, device: str, boot: str, lost: dict[str, Any]) -> None:
        """A board restarted (a new boot id in its telemetry) and lost `lost`: send them again."""
        reason = f"the board restarted (boot {boot}) and lost the settings it had applied; sent again"
        log.warning("%s restarted (boot %s): sending %s again", device, boot, lost)
        try:
            self.accept(device, lost, self.settings.command_expiry_s, reason)
        except (Unavailable, CommandError) as exc:
            self._throttled.warning("resend", "cannot send %s again to %s: %s", lost, device, exc)

    def _dead_letter(self, record: Any, kind: str, reason: str) -> None:
        assert self._producer is not None
        metrics.DEAD_LETTERS.labels(kind).inc()
        source = f"{record.topic}/{record.partition}/{record.offset}"
        log.warning("%s refused (dead-lettered): %s", source, reason)
        self._producer.send(
            self.config.kafka.dead_letter_topic,
            key=record.key,
            value=record.value,
            headers=deadletter.headers(reason, STAGE, source=source),
        )

    # --- persisting ---

    def persist(self, everything: bool = False) -> bool:
        """Produce the changed devices' states to the state topic and wait for Kafka; False (and the
        devices kept for the next try) when it did not acknowledge in time. Devices whose readings
        alone changed wait for twin_state.readings_persist_s, unless `everything`."""
        assert self._producer is not None
        with self._persisting:
            dirty = self.twin.take_dirty(everything)
            if not dirty:
                return True
            futures = [
                self._producer.send(self.settings.state_topic, key=device.encode(), value=encode_state(state))
                for device, state in dirty
            ]
        try:
            self._producer.flush(timeout=self.settings.kafka_timeout_s)
            for future in futures:
                future.get(timeout=0)
        except KafkaError as exc:
            self.twin.mark_dirty([device for device, _ in dirty])
            self._throttled.warning("persist", "state topic %s: %s; retrying", self.settings.state_topic, exc)
            return False
        metrics.PERSISTED.inc(len(dirty))
        return True
