"""Kafka → InfluxDB in three named steps: accumulate a batch, flush it, then commit its offsets.

Flushing writes the points and delivers the batch's dead letters; offsets are committed only after
both succeeded, so a crash or outage anywhere re-delivers records instead of losing them. While a
flush is being retried, no more records are fetched, so memory stays at one batch.

Accumulating refuses, as dead letters with their reason, what would be stored wrongly: payloads that
are not envelopes, event times outside the plausibility window (twinpipe.eventtime, judged against
the record's Kafka timestamp so a re-delivery gets the same verdict), values outside their
datastream's plausible range in the model (the publisher drops those already; this catches other
producers writing to Kafka directly) and value names that would hide one of the series' tags. It
counts, without refusing, envelope keys it does not know and points that overwrite a different
recent reading.

Accumulating also adds, for a device of a thing in the model with a location, a point of
`ingestion.location_measurement` once per `location_interval_s` window of event time
(points.LocationPoints); it is written in the same request as the readings, never on its own.

Flushing first sets aside, as dead letters, points older than the bucket's retention (read from the
bucket, or `ingestion.retention_s`): InfluxDB would drop them. What InfluxDB still refuses is found
by `isolate.write_isolating` in a few requests, not one request per point.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from influx_ingestion import metrics
from influx_ingestion.isolate import BEYOND_RETENTION, write_isolating
from influx_ingestion.points import LocationPoints, PointMapper, RecentPoints, Unstorable
from twinpipe import deadletter, retry
from twinpipe.backoff import Backoff
from twinpipe.config import Config
from twinpipe.config.model import Location
from twinpipe.envelope import EnvelopeError, decode
from twinpipe.eventtime import EventTimeWindow, arrival_ns
from twinpipe.health import Check, Heartbeat
from twinpipe.influx import Unavailable
from twinpipe.metrics import consumer_lag, sample
from twinpipe.model import TwinModel
from twinpipe.names import PROBE_DEVICE
from twinpipe.ratelog import ThrottledLog
from twinpipe.trace import judge

log = logging.getLogger("influx_ingestion")

STAGE = "influx_ingestion"
# Not ready once this many points in a row were refused by storage (InfluxDB, or names that would
# hide a tag) with none accepted: the stage runs but stores nothing, e.g. a configured tag InfluxDB
# rejects or a field type conflict every reading hits.
REJECTED_STREAK_NOT_READY = 10
# Write requests per batch after which a refused group is no longer split (isolate.write_isolating):
# one bad point among 5,000 takes about 2·log2(5000) ≈ 26, so this isolates several.
MAX_ISOLATION_REQUESTS = 100
# Points are set aside before writing only when older than the retention by this much more: the
# clock skew between this host and InfluxDB allowed elsewhere (ingestion.max_event_future_s's
# default). Points closer to the boundary are left to InfluxDB, whose partial write names them.
RETENTION_SLACK_S = 300.0
RETENTION_REFRESH_S = 300.0  # how often the bucket's retention is read again
RETENTION_RECHECK_S = 10.0  # at the soonest after InfluxDB dropped points for retention


class DeadLetter(NamedTuple):
    record: ConsumerRecord
    reason: str
    kind: str  # for metrics: one of metrics.DEAD_LETTER_KINDS


@dataclass
class Batch:
    lines: list[str] = field(default_factory=list)
    sources: list[ConsumerRecord] = field(default_factory=list)  # the record behind each line
    event_times: list[int] = field(default_factory=list)  # the event time (ns) of each line
    replayed: list[bool] = field(default_factory=list)  # each line's envelope has origin (a replay)
    dead_letters: list[DeadLetter] = field(default_factory=list)  # not yet delivered to Kafka
    # Location points due with this batch's readings, and their times (ns): no Kafka record of their own.
    locations: list[str] = field(default_factory=list)
    location_times: list[int] = field(default_factory=list)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)  # next offset to commit
    started: float = field(default_factory=time.monotonic)


class Ingestion:
    def __init__(
        self,
        config: Config,
        consumer: KafkaConsumer,
        write: Callable[[list[str]], None],
        dead_letters: KafkaProducer,
        read_retention_s: Callable[[], float] | None = None,
    ) -> None:
        """`read_retention_s`: the bucket's retention in seconds (0: forever), may raise Unavailable;
        used unless `ingestion.retention_s` is set."""
        self._config = config
        self._settings = config.ingestion
        self._consumer = consumer
        self._write = write
        self._producer = dead_letters
        settings = self._settings
        model = TwinModel(config.model)

        def thing_of(device: str) -> str | None:
            thing = model.thing(device) if device != PROBE_DEVICE else None  # a glob "*" is no probe
            return thing.entry if thing is not None else None

        def locate(device: str) -> tuple[str, Location] | None:
            thing = model.thing(device) if device != PROBE_DEVICE else None
            if thing is None or thing.location is None:
                return None
            return thing.entry, thing.location

        self._model = model
        self._mapper = PointMapper(settings.measurement, settings.tags, settings.device_tags, thing_of)
        self._locations = (
            LocationPoints(settings.location_measurement, settings.location_interval_s, locate)
            if settings.location_measurement is not None
            else None
        )
        self._throttled = ThrottledLog(log)
        # A flush may legitimately wait a full write timeout plus the longest backoff between beats.
        self.heartbeat = Heartbeat(max_age_s=config.influxdb.timeout_s + settings.retry_max_s + 30)
        self._committed: dict[TopicPartition, int] = {}
        self._failing: dict[str, str] = {}  # operations being retried right now → the latest error
        self._recent = RecentPoints()
        self._event_times = EventTimeWindow(settings)
        self._rejected_streak = 0  # points refused by storage in a row, none accepted since
        self._rejected_reason = ""  # the latest refusal's reason
        self._read_retention_s = read_retention_s
        self._retention_s: float | None = settings.retention_s  # None: not known (yet)
        self._retention_read_at = -float("inf")
        self._retention_stale = False  # InfluxDB dropped points for retention since the last read

    def ready_checks(self) -> dict[str, Check]:
        """Not ready while InfluxDB writes or dead-letter deliveries are failing, or while every
        recent point is refused by storage (naming the reason)."""
        checks: dict[str, Check] = {
            operation: lambda o=operation: self._failing.get(o, True)  # True, or the error being retried
            for operation in ("write", "dead_letters")
        }
        checks["points_stored"] = self._storing
        return checks

    def _storing(self) -> bool | str:
        streak, reason = self._rejected_streak, self._rejected_reason
        if streak < REJECTED_STREAK_NOT_READY:
            return True
        return f"the last {streak} points were all refused, the latest: {reason}"

    def _note_stored(self, accepted: int, refused: list[DeadLetter]) -> None:
        """Outcomes of one write (or one refusal before it): any point accepted ends the streak."""
        if accepted:
            self._rejected_streak = 0
        elif refused:
            self._rejected_streak += len(refused)
            self._rejected_reason = refused[-1].reason

    def run(self, stop: threading.Event) -> None:
        settings = self._settings
        batch = Batch()
        while not stop.is_set():
            self.heartbeat.beat()
            # With an empty batch there is nothing to flush: wait for records (poll returns on the first).
            wait_s = settings.flush_interval_s - (time.monotonic() - batch.started) if batch.offsets else 0.2
            polled = self._consumer.poll(
                timeout_ms=int(min(max(0.0, wait_s), 0.2) * 1000),
                max_records=settings.batch_size - len(batch.sources),
            )
            for records in polled.values():
                metrics.CONSUMED.inc(len(records))  # per poll, not per record: the counters lock
                metrics.CONSUMED_BYTES.inc(sum(len(record.value or b"") for record in records))
                for record in records:
                    self.accumulate(batch, record)
            full = len(batch.sources) >= settings.batch_size
            due = time.monotonic() - batch.started >= settings.flush_interval_s
            if full or (due and batch.offsets):
                self.flush_and_commit(batch, stop)
                batch = Batch()
            elif due:
                batch.started = time.monotonic()
        if batch.offsets:
            self.flush_and_commit(batch, stop)
        log.info(
            "stopped: %d points written, %d dead letters, %d retries",
            sample("twinpipe_ingestion_points_written_total"),
            sum(sample("twinpipe_ingestion_dead_letters_total", kind=k) for k in metrics.DEAD_LETTER_KINDS),
            sum(sample("twinpipe_ingestion_retries_total", operation=o) for o in ("write", "dead_letters")),
        )

    # --- step 1: accumulate ---

    def accumulate(self, batch: Batch, record: ConsumerRecord) -> None:
        batch.offsets[TopicPartition(record.topic, record.partition)] = record.offset + 1
        try:
            envelope = decode(record.value or b"")
        except EnvelopeError as exc:
            batch.dead_letters.append(
                self._rejected(record, f"not a valid envelope: {exc.reason}", "invalid")
            )
            return
        if envelope.extra:
            metrics.UNKNOWN_KEYS.inc()
            self._throttled.warning(
                "unknown-keys", "envelope keys %s ignored (not in version 1)", sorted(envelope.extra)
            )
        problem = self._event_times.problem(envelope.time_ns, arrival_ns(record.timestamp))
        if problem is not None:
            batch.dead_letters.append(
                self._rejected(record, f"implausible event time: {problem}", "implausible_time")
            )
            return
        if envelope.device != PROBE_DEVICE and (
            wrong := self._model.range_problem(envelope.device, envelope.values)
        ):
            batch.dead_letters.append(self._rejected(record, f"out of range: {wrong}", "out_of_range"))
            return
        try:
            line = self._mapper.to_line(envelope)
        except Unstorable as exc:
            dead = self._rejected(record, f"cannot be stored: {exc}", "invalid")
            batch.dead_letters.append(dead)
            self._note_stored(0, [dead])
            return
        if self._recent.overwrites(envelope.device, envelope.time_ns, envelope.boot, envelope.seq):
            metrics.OVERWRITES.inc()
            self._throttled.warning(
                "overwrite",
                "device %s: two readings with event time %d (now boot %s seq %d); InfluxDB keeps one point,"
                " the later",
                envelope.device,
                envelope.time_ns,
                envelope.boot,
                envelope.seq,
            )
        batch.lines.append(line)
        batch.sources.append(record)
        batch.event_times.append(envelope.time_ns)
        batch.replayed.append(envelope.origin is not None)
        if self._locations is not None:
            due = self._locations.due(envelope.device, envelope.time_ns)
            if due is not None:
                batch.locations.append(due[0])
                batch.location_times.append(due[1])

    # --- step 2: flush ---

    def flush_and_commit(self, batch: Batch, stop: threading.Event) -> bool:
        """Write, deliver dead letters, commit. Retries until done; once stopping, until the shutdown
        deadline, after which nothing is committed and Kafka re-delivers the batch later."""

        self._set_aside_beyond_retention(batch)

        def write() -> None:
            rejected = self._write_isolating_rejects(batch)
            batch.dead_letters += rejected  # only once the whole write attempt succeeded
            metrics.WRITTEN.inc(len(batch.lines) - len(rejected))
            self._note_stored(
                len(batch.lines) - len(rejected), [r for r in rejected if r.kind != BEYOND_RETENTION]
            )
            observe_write_delays(batch, time.time_ns(), self._settings.max_plausible_delay_s)

        if not self._retry(write, "write", "InfluxDB write", stop):
            return False
        if not self._retry(
            lambda: self._deliver_dead_letters(batch), "dead_letters", "dead-letter delivery", stop
        ):
            return False
        return self._commit(batch)

    def _write_isolating_rejects(self, batch: Batch) -> list[DeadLetter]:
        """Write; what InfluxDB refuses comes back as dead letters with its reason (isolate.py)."""
        readings = len(batch.lines)
        outcome = write_isolating(
            batch.lines + batch.locations,
            batch.event_times + batch.location_times,
            self._write_one,
            MAX_ISOLATION_REQUESTS,
        )
        if any(refused.kind == BEYOND_RETENTION for refused in outcome.refused):
            self._retention_stale = True
        refused_locations = [r for r in outcome.refused if r.index >= readings]
        for refused in refused_locations:  # derived from config.yaml: no record to dead-letter, logged
            metrics.LOCATIONS_REFUSED.inc()
            self._throttled.warning(
                "location",
                "location point refused: %s: %s",
                batch.locations[refused.index - readings],
                refused.reason,
            )
        metrics.LOCATIONS_WRITTEN.inc(len(batch.locations) - len(refused_locations))
        return [
            self._rejected(batch.sources[r.index], r.reason, r.kind)
            for r in outcome.refused
            if r.index < readings
        ]

    def _write_one(self, lines: list[str]) -> None:
        """One write request, counted and timed."""
        metrics.WRITE_REQUESTS.inc()
        with metrics.WRITE_DURATION.time():
            self._write(lines)
        metrics.BATCH_SIZE.observe(len(lines))

    # --- retention ---

    def _current_retention_s(self) -> float | None:
        """`ingestion.retention_s` if set, else the bucket's, read again every RETENTION_REFRESH_S
        (sooner after InfluxDB dropped points for retention); None while it cannot be read."""
        if self._settings.retention_s is not None or self._read_retention_s is None:
            return self._retention_s
        since = time.monotonic() - self._retention_read_at
        if since < RETENTION_REFRESH_S and not (self._retention_stale and since >= RETENTION_RECHECK_S):
            return self._retention_s
        self._retention_read_at = time.monotonic()
        self._retention_stale = False
        try:
            retention_s = self._read_retention_s()
        except Unavailable as exc:
            self._throttled.warning(
                "retention",
                "bucket retention unknown (%s); points beyond it are found by InfluxDB's partial write"
                " instead of before writing (set ingestion.retention_s to skip the lookup)",
                exc,
            )
            return self._retention_s
        if retention_s != self._retention_s:
            log.info("bucket retention: %s", f"{retention_s:g} s" if retention_s else "forever")
        self._retention_s = retention_s
        return retention_s

    def _set_aside_beyond_retention(self, batch: Batch) -> None:
        """Move points InfluxDB would drop for retention out of the write, into the dead letters."""
        retention_s = self._current_retention_s()
        if not retention_s:
            return
        now_ns = time.time_ns()
        cutoff_ns = now_ns - int((retention_s + RETENTION_SLACK_S) * 1e9)
        if not batch.event_times or min(batch.event_times) >= cutoff_ns:
            return  # the usual batch: one pass, nothing to move
        keep = [i for i, event_ns in enumerate(batch.event_times) if event_ns >= cutoff_ns]
        kept = set(keep)
        source = (
            "ingestion.retention_s" if self._settings.retention_s is not None else "the bucket's retention"
        )
        for i, event_ns in enumerate(batch.event_times):
            if i not in kept:
                age_s = (now_ns - event_ns) / 1e9
                reason = (
                    f"beyond retention: event time {event_ns} is {age_s:.0f} s old, older than {source}"
                    f" ({retention_s:g} s); InfluxDB would drop it (points beyond retention policy)"
                )
                batch.dead_letters.append(self._rejected(batch.sources[i], reason, BEYOND_RETENTION))
        old_locations = [i for i, time_ns in enumerate(batch.location_times) if time_ns < cutoff_ns]
        if old_locations:  # of readings set aside just now: InfluxDB would drop them as well
            metrics.LOCATIONS_REFUSED.inc(len(old_locations))
            batch.locations = [line for i, line in enumerate(batch.locations) if i not in old_locations]
            batch.location_times = [t for t in batch.location_times if t >= cutoff_ns]
        batch.lines = [batch.lines[i] for i in keep]
        batch.sources = [batch.sources[i] for i in keep]
        batch.event_times = [batch.event_times[i] for i in keep]
        batch.replayed = [batch.replayed[i] for i in keep]

    def _rejected(self, record: ConsumerRecord, reason: str, kind: str) -> DeadLetter:
        self._throttled.warning(
            "dead-letter", "dead letter %s/%d/%d: %s", record.topic, record.partition, record.offset, reason
        )
        return DeadLetter(record, reason, kind)

    def _deliver_dead_letters(self, batch: Batch) -> None:
        """Send and wait for Kafka's acknowledgement; what failed stays in the batch for the next try."""
        topic = self._config.kafka.dead_letter_topic
        sent = []
        for item in batch.dead_letters:
            record = item.record
            source = f"{record.topic}/{record.partition}/{record.offset}"
            headers = deadletter.headers(item.reason, STAGE, source=source)
            sent.append(
                (item, self._producer.send(topic, value=record.value, key=record.key, headers=headers))
            )
        failed = []
        for item, future in sent:
            try:
                future.get(timeout=self._config.influxdb.timeout_s)
                metrics.DEAD_LETTERS.labels(item.kind).inc()
            except KafkaError:
                failed.append(item)
        batch.dead_letters = failed
        if failed:
            raise KafkaError(f"{len(failed)} dead letters not acknowledged by Kafka")

    def _retry(self, attempt: Callable[[], None], operation: str, what: str, stop: threading.Event) -> bool:
        def failed(exc: BaseException, delay_s: float) -> None:
            self._failing[operation] = f"{what} failing, retried: {exc}"
            self.heartbeat.beat()
            metrics.RETRIES.labels(operation).inc()
            self._throttled.warning(what, "%s failed (%s); retrying in %.1f s", what, exc, delay_s)

        backoff = Backoff(self._settings.retry_initial_s, self._settings.retry_max_s)
        if retry.until_done(
            attempt, (Unavailable, KafkaError), stop, backoff, failed, self._settings.shutdown_timeout_s
        ):
            self._failing.pop(operation, None)
            return True
        log.warning("shutdown: %s not done; nothing committed, Kafka re-delivers the batch", what)
        return False

    # --- step 3: commit ---

    def _commit(self, batch: Batch) -> bool:
        offsets = {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in batch.offsets.items()}
        try:
            self._consumer.commit(offsets)
        except CommitFailedError as exc:
            metrics.COMMIT_FAILURES.inc()
            log.warning(
                "offset commit failed after a rebalance (%s); the new owner rewrites the same points", exc
            )
            return False
        except KafkaError as exc:
            metrics.COMMIT_FAILURES.inc()
            log.warning("offset commit failed (%s); records will be re-delivered and rewritten", exc)
            return False
        self._committed.update(batch.offsets)
        lag = consumer_lag(self._consumer, self._committed)
        if lag is not None:
            metrics.LAG.set(lag)
        return True


# Points per batch whose delays are observed: two histogram observations per point were 13 % of the
# ingestion's CPU under a backlog. An even sample keeps the distribution; small batches are all seen.
DELAY_SAMPLES_PER_BATCH = 100


def observe_write_delays(batch: Batch, acked_ns: int, max_plausible_s: float = 3600.0) -> None:
    """Kafka timestamp → write acknowledged, and board read → write acknowledged, for up to
    DELAY_SAMPLES_PER_BATCH evenly spaced points of the batch. Negative delays are clock trouble
    (stages on hosts whose clocks disagree); delays above `max_plausible_s` are a spool backlog, a
    replay or a wrong clock, not latency. Both are counted by kind, never observed. Replayed readings
    (envelope `origin`) are left out and counted in `replayed_points_total`: their event time is the
    recording's, so the delay is not the pipeline's."""
    replayed = sum(batch.replayed)
    if replayed:
        metrics.REPLAYED_POINTS.inc(replayed)
    step = max(1, -(-len(batch.sources) // DELAY_SAMPLES_PER_BATCH))  # ceil; 1 for a batch of dead letters
    for record, event_ns, was_replayed in zip(
        batch.sources[::step], batch.event_times[::step], batch.replayed[::step], strict=True
    ):
        if was_replayed:
            continue
        for histogram, name, delay_s in (
            (metrics.WRITE_DELAY, "write", acked_ns / 1e9 - record.timestamp / 1e3),
            (metrics.END_TO_END_DELAY, "end_to_end", (acked_ns - event_ns) / 1e9),
        ):
            verdict = judge(delay_s, max_plausible_s)
            if verdict == "ok":
                histogram.observe(delay_s)
            else:
                metrics.CLOCK_ANOMALIES.labels(name, verdict).inc()
