"""Getting every record into Kafka: failures are re-sent after a backoff, in their original order,
and a producer in a fatal state is replaced, not hammered.

The forwarding thread hands records over with `send`. The producer reports each record's outcome
from its own thread; a success releases the record (`on_delivered`), a failure puts it aside and
asks the forwarding thread (`wake`) to `recover`: it stops sending new records, waits until every
record in flight has an outcome, replaces the producer if it is in a fatal state (logged once with
the cause, counted by cause), waits a backoff that grows while re-sends keep failing, and re-sends
the failed records oldest first. New records follow only once the older ones are delivered, so a
device's records keep their order across the re-send (records delivered while an older one was
failing stay where they landed). Until a record is delivered again, readiness names the failure.

A record's outcome is reported by the producer it was sent with; outcomes from a replaced producer
are ignored (its records are re-sent by the new one, so a late success there at most duplicates).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from mqtt_kafka_bridge import metrics
from mqtt_kafka_bridge.acks import Pending
from mqtt_kafka_bridge.producers import Fatal, NotAccepted, Producer
from twinpipe.backoff import Backoff
from twinpipe.ratelog import ThrottledLog

log = logging.getLogger("mqtt_kafka_bridge")

RESEND_INITIAL_S = 0.5  # the first re-send waits this long, doubling while re-sends keep failing ...
RESEND_MAX_S = 10.0  # ... up to this
SEND_RETRY_MAX_S = 5.0  # the producer refused a record (buffer full, no metadata): retry up to this
NO_REPORT_MARGIN_S = 5.0  # a record without an outcome this long past the delivery timeout: stuck
FATAL_CHECK_S = 0.5  # how often the producer's own fatal state is looked at while waiting


@dataclass(slots=True)
class Record:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] | None
    pending: Pending | None  # None for QoS 0 messages, which are never acknowledged


@dataclass(slots=True, eq=False)
class _Sent:
    number: int  # arrival order
    generation: int  # which producer it was sent with
    record: Record


class Delivery:
    def __init__(
        self,
        producer: Producer,
        replacement: Callable[[threading.Event], Producer | None],
        on_delivered: Callable[[Record], None],
        wake: Callable[[], None],
        delivery_timeout_s: float,
        *,
        resend_backoff: Callable[[], Backoff] = lambda: Backoff(RESEND_INITIAL_S, RESEND_MAX_S),
        no_report_margin_s: float = NO_REPORT_MARGIN_S,
    ) -> None:
        """`replacement(stop)`: a new producer, retried until it connects; None once `stop` is set.
        `wake`: make the forwarding thread call `recover` soon (it may be waiting for messages)."""
        self._producer = producer
        self._replacement = replacement
        self._on_delivered = on_delivered
        self._wake = wake
        self._no_report_s = delivery_timeout_s + no_report_margin_s
        self._resend_backoff = resend_backoff
        self.stop = threading.Event()
        self._lock = threading.Condition()
        self._numbers = 0
        self._generation = 0
        self._unsettled: dict[int, _Sent] = {}  # sent with the current producer, no outcome yet
        self._failed: dict[int, Record] = {}  # waiting to be re-sent
        self._fatal: Fatal | None = None
        self._recovering = False  # a wake is posted or recover() runs
        self._failing: str | None = None  # why nothing is delivered now; None once a record lands
        self._throttled = ThrottledLog(log)
        metrics.RESEND_PENDING.set_function(lambda: len(self._failed))
        metrics.KAFKA_DELIVERING.set_function(lambda: self._failing is None)

    # --- forwarding thread ---

    def send(self, record: Record) -> None:
        """Hand a new record over; while older records wait for a re-send, those go first."""
        if self._recovering:
            self.recover()
            if self._recovering:
                return  # stopping with older records undelivered: this one stays in MQTT behind them
        with self._lock:
            self._numbers += 1
            number = self._numbers
        if not self._hand_over(number, record) and not self.stop.is_set():
            self.recover()  # the producer turned out fatal: replace it now

    def recover(self) -> None:
        """Re-send what failed, replacing a fatal producer first, until everything sent so far is
        delivered (or stop). Returns at once when nothing failed."""
        backoff = self._resend_backoff()
        while not self.stop.is_set():
            self._settle()
            with self._lock:
                fatal = self._fatal or (self._producer.fatal_cause(None) if self._producer else None)
            if fatal is not None and not self._replace(fatal):
                return  # stopped while connecting
            with self._lock:
                if not self._failed:
                    self._recovering = False
                    return
                batch = sorted(self._failed.items())
                self._failed.clear()
            delay = backoff.next_delay()
            self._throttled.warning(
                "resend", "re-sending %d records to Kafka in %.1f s (%s)", len(batch), delay, self._failing
            )
            if self.stop.wait(delay):
                self._put_back(batch)
                return
            for index, (number, record) in enumerate(batch):
                if not self._hand_over(number, record):
                    self._put_back(batch[index + 1 :])
                    break

    def _put_back(self, batch: list[tuple[int, Record]]) -> None:
        with self._lock:
            self._failed.update(batch)

    def _hand_over(self, number: int, record: Record) -> bool:
        """Give the record to the producer; False when it was not (stop, or the producer is fatal:
        then it waits among the failed ones)."""
        backoff = Backoff(0.2, SEND_RETRY_MAX_S)
        while True:  # tried at least once: on stop the forwarding thread still hands over what it took
            with self._lock:
                producer = self._producer
                sent = _Sent(number, self._generation, record)
                self._unsettled[number] = sent
            try:
                producer.send(record.topic, record.key, record.value, record.headers, self._reported, sent)
                return True
            except NotAccepted as exc:
                fatal = producer.fatal_cause(exc.__cause__)
                with self._lock:
                    self._unsettled.pop(number, None)
                    if fatal is not None:
                        self._failed[number] = record
                        self._fatal = self._fatal or fatal
                        self._recovering = True
                        self._failing = f"Kafka producer in a fatal state ({fatal.detail})"
                        return False
                    self._failing = f"Kafka refuses records ({exc})"
                metrics.ERRORS.labels("send").inc()
                self._throttled.warning("send", "cannot hand record to Kafka (%s); retrying", exc)
                if self.stop.wait(backoff.next_delay()):
                    return False

    def _settle(self) -> None:
        """Wait until every record sent with the current producer has an outcome, or the producer
        turns out fatal; one silent past its delivery timeout makes the producer count as stuck."""
        deadline = time.monotonic() + self._no_report_s
        while True:
            with self._lock:
                if not self._unsettled or self._fatal is not None or self.stop.is_set():
                    return
                if time.monotonic() > deadline:
                    self._fatal = Fatal(
                        "no_delivery_report",
                        f"{len(self._unsettled)} records without an outcome {self._no_report_s:.0f} s after "
                        "they were sent",
                    )
                    return
                self._lock.wait(FATAL_CHECK_S)
                producer = self._producer
            if producer is not None:
                # An idle kafka-python sender looks at expired batches only when woken (a flush does).
                producer.flush(0)
                fatal = producer.fatal_cause(None)
                with self._lock:
                    self._fatal = self._fatal or fatal

    def _replace(self, fatal: Fatal) -> bool:
        """Log once, count, drop the fatal producer, connect a new one; False if stopped meanwhile."""
        with self._lock:
            self._generation += 1
            self._failed.update((number, sent.record) for number, sent in self._unsettled.items())
            self._unsettled.clear()
            self._fatal = None
            old, self._producer = self._producer, None
            self._failing = f"replacing the Kafka producer after a fatal error ({fatal.detail})"
            waiting = len(self._failed)
        metrics.PRODUCER_RECREATIONS.labels(fatal.kind).inc()
        log.error(
            "Kafka producer in a fatal state (%s): replacing it and re-sending the %d records not "
            "acknowledged by Kafka",
            fatal.detail,
            waiting,
        )
        if old is not None:
            old.abandon()
        new = self._replacement(self.stop)
        if new is None:
            return False
        with self._lock:
            self._producer = new
        log.info("new Kafka producer connected; re-sending")
        return True

    def flush(self, timeout_s: float) -> bool:
        """Wait until every record handed over has an outcome; False if time ran out or some failed
        (those stay unacknowledged in MQTT)."""
        deadline = time.monotonic() + timeout_s
        producer = self._producer
        if producer is not None and not producer.flush(timeout_s):
            return False
        with self._lock:
            while self._unsettled and time.monotonic() < deadline:
                self._lock.wait(max(0.0, deadline - time.monotonic()))
            return not self._unsettled and not self._failed

    def close(self, timeout_s: float) -> None:
        self.stop.set()
        if self._producer is not None:
            self._producer.close(timeout_s)

    def ready(self) -> bool | str:
        return self._failing or True

    # --- the producer's delivery thread ---

    def _reported(self, sent: _Sent, error: BaseException | None) -> None:
        with self._lock:
            if sent.generation != self._generation or self._unsettled.get(sent.number) is not sent:
                return  # from a replaced producer: its records are re-sent
            del self._unsettled[sent.number]
            if error is None:
                self._failing = None
            else:
                self._failed[sent.number] = sent.record
                fatal = self._producer.fatal_cause(error) if self._producer else None
                self._fatal = self._fatal or fatal
                if self._failing is None:
                    self._failing = f"deliveries to Kafka fail ({type(error).__name__}: {error})"
                wake, self._recovering = not self._recovering, True
            self._lock.notify_all()
        if error is None:
            self._on_delivered(sent.record)
            return
        metrics.ERRORS.labels("delivery").inc()
        self._throttled.warning(
            "failed", "delivery to %s failed (%s); re-sending after a backoff", sent.record.topic, error
        )
        if wake:
            self._wake()
