"""mqtt_kafka_bridge/delivery.py without servers: scripted producers that fail, time out, turn fatal
or never answer, and the books that every record lands once, in arrival order, with a backoff
before every re-send round and one replacement per fatal producer."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka import errors

from mqtt_kafka_bridge.delivery import Delivery, Record
from mqtt_kafka_bridge.producers import (
    ConfluentProducer,
    DeliveryFailed,
    Fatal,
    KafkaPythonProducer,
    NotAccepted,
    confluent_fatal_kind,
)
from twinpipe.backoff import Backoff


class Timeout(Exception):
    """A delivery timed out: re-send."""


class Fenced(Exception):
    """A delivery failed because the producer is fenced: replace it."""


class CountingBackoff(Backoff):
    delays: list[float] = []

    def next_delay(self) -> float:
        delay = super().next_delay()
        CountingBackoff.delays.append(delay)
        return 0.0  # the books count the waits; the test does not sit them out


class ScriptedProducer:
    """Reports each record at once: the outcome the script gives for (producer index, attempt)."""

    def __init__(self, index: int, script: dict[tuple[int, int], str], log: list[tuple[int, int, str]]):
        self.index = index
        self.script = script
        self.log = log
        self.attempts = 0
        self.fenced = False
        self.abandoned = False

    def send(self, topic: str, key: Any, value: bytes, headers: Any, on_delivery: Any, context: Any) -> None:
        assert not self.abandoned
        self.attempts += 1
        outcome = "fenced" if self.fenced else self.script.get((self.index, self.attempts), "ok")
        self.log.append((self.index, int(value), outcome))
        if outcome == "refused":
            raise NotAccepted("fatal") from Fenced()
        if outcome == "fenced":
            self.fenced = True
        on_delivery(context, None if outcome == "ok" else Fenced() if outcome == "fenced" else Timeout())

    def fatal_cause(self, error: BaseException | None) -> Fatal | None:
        fatal = isinstance(error, Fenced) or (error is None and self.fenced)
        return Fatal("producer_fenced", "fenced") if fatal else None

    def flush(self, timeout_s: float) -> bool:
        return True

    def close(self, timeout_s: float) -> None:
        pass

    def abandon(self) -> None:
        self.abandoned = True


def run(script: dict[tuple[int, int], str], records: int, devices: int = 3) -> tuple[list, list, list]:
    """Feed `records` through a Delivery as the forwarding thread does; returns what was delivered
    (values), every send (producer, value, outcome) and the producers."""
    log: list[tuple[int, int, str]] = []
    producers = [ScriptedProducer(0, script, log)]
    delivered: list[int] = []
    wakes: list[int] = []

    def replacement(_stop: threading.Event) -> ScriptedProducer:
        producers.append(ScriptedProducer(len(producers), script, log))
        return producers[-1]

    delivery = Delivery(
        producers[0],
        replacement,
        lambda record: delivered.append(int(record.value)),
        lambda: wakes.append(1),
        120.0,
        resend_backoff=lambda: CountingBackoff(0.5, 10.0),
    )
    for n in range(records):
        delivery.send(Record("t", f"d{n % devices}".encode(), str(n).encode(), None, None))
        while wakes:  # the _RECOVER token in the bridge's inbox
            wakes.pop()
            delivery.recover()
    return delivered, log, producers


OUTCOMES = st.sampled_from(["ok", "ok", "timeout", "fenced", "refused"])


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.tuples(st.integers(0, 4), st.integers(1, 40)), OUTCOMES, max_size=30),
    st.integers(1, 30),
)
def test_every_record_lands_once_in_arrival_order_after_any_failures(
    script: dict[tuple[int, int], str], records: int
) -> None:
    CountingBackoff.delays = []
    delivered, log, producers = run(script, records)
    assert delivered == list(range(records))
    fatal = {index for index, _, outcome in log if outcome in ("fenced", "refused")}
    assert {p.index for p in producers if p.abandoned} == fatal, "replaced exactly the fatal producers"
    assert not producers[-1].abandoned
    failed_sends = sum(1 for _, _, outcome in log if outcome != "ok")
    # No spin: every round of re-sends waits a backoff first, and a round exists only after a failure.
    assert len(CountingBackoff.delays) <= failed_sends


def test_a_fenced_producer_is_replaced_once_and_its_records_re_sent_in_order() -> None:
    CountingBackoff.delays = []
    # The first producer fails its 3rd record as fenced, then fails everything (as librdkafka did).
    delivered, log, producers = run({(0, 3): "fenced"}, 6)
    assert delivered == list(range(6))
    assert len(producers) == 2 and producers[0].abandoned
    assert [value for index, value, _ in log if index == 1] == [2, 3, 4, 5]
    assert len(CountingBackoff.delays) == 1


def test_timeouts_are_re_sent_after_a_growing_backoff_without_replacing_the_producer() -> None:
    CountingBackoff.delays = []
    delivered, log, producers = run({(0, 1): "timeout", (0, 2): "timeout", (0, 3): "timeout"}, 2)
    assert delivered == [0, 1]
    assert len(producers) == 1
    assert [value for _, value, _ in log] == [0, 0, 0, 0, 1]
    assert CountingBackoff.delays[0] < CountingBackoff.delays[1] < CountingBackoff.delays[2]


class SilentProducer(ScriptedProducer):
    """Takes records and never reports them: a stuck client."""

    def send(self, topic: str, key: Any, value: bytes, headers: Any, on_delivery: Any, context: Any) -> None:
        self.attempts += 1
        self.pending = (on_delivery, context)


def test_a_producer_that_never_reports_is_replaced_after_the_delivery_timeout_and_a_margin() -> None:
    delivered: list[int] = []
    silent = SilentProducer(0, {}, [])
    replacement = ScriptedProducer(1, {}, [])
    delivery = Delivery(
        silent,
        lambda _stop: replacement,
        lambda record: delivered.append(int(record.value)),
        lambda: None,
        0.1,
        resend_backoff=lambda: Backoff(0.01, 0.01),
        no_report_margin_s=0.2,
    )
    delivery.send(Record("t", b"d", b"7", None, None))
    started = time.monotonic()
    delivery.recover()  # as after any failure: waits for the outcome, which never comes
    assert 0.25 < time.monotonic() - started < 5
    assert silent.abandoned and delivered == [7]
    silent.pending[0](silent.pending[1], None)  # a late report from the replaced producer is ignored
    assert delivered == [7]


def test_readiness_names_the_failure_until_a_record_lands() -> None:
    wakes: list[int] = []
    producer = ScriptedProducer(0, {(0, 1): "timeout"}, [])
    delivery = Delivery(
        producer, lambda _stop: None, lambda _record: None, lambda: wakes.append(1), 120.0,
        resend_backoff=lambda: Backoff(0.0, 0.0),
    )  # fmt: skip
    delivery.send(Record("t", b"d", b"1", None, None))
    reason = delivery.ready()
    assert isinstance(reason, str) and "Timeout" in reason and wakes
    delivery.recover()
    assert delivery.ready() is True


def test_which_client_errors_mean_the_producer_must_be_replaced() -> None:
    assert confluent_fatal_kind(KafkaError.PRODUCER_FENCED, False) == "producer_fenced"
    assert confluent_fatal_kind(KafkaError.UNKNOWN_PRODUCER_ID, False) == "unknown_producer_id"
    assert confluent_fatal_kind(KafkaError._MSG_TIMED_OUT, False) is None  # re-sent, not replaced
    assert confluent_fatal_kind(KafkaError._TRANSPORT, True) == "fatal"
    confluent: Any = SimpleNamespace(_fatal=None)
    fenced = ConfluentProducer.fatal_cause(confluent, DeliveryFailed(KafkaError(KafkaError.PRODUCER_FENCED)))
    assert fenced is not None and fenced.kind == "producer_fenced" and "PRODUCER_FENCED" in fenced.detail
    refused = KafkaException(KafkaError(KafkaError._FATAL))  # produce() after a fatal error
    assert ConfluentProducer.fatal_cause(confluent, refused) == Fatal("fatal", "_FATAL: Local: Fatal error")
    assert ConfluentProducer.fatal_cause(confluent, BufferError("queue full")) is None
    timed_out = DeliveryFailed(KafkaError(KafkaError._MSG_TIMED_OUT))
    assert ConfluentProducer.fatal_cause(confluent, timed_out) is None

    manager = SimpleNamespace(has_fatal_error=lambda: False, last_error=None)
    python: Any = SimpleNamespace(_producer=SimpleNamespace(_transaction_manager=manager))
    assert KafkaPythonProducer.fatal_cause(python, errors.KafkaTimeoutError("expired")) is None
    fatal = KafkaPythonProducer.fatal_cause(python, errors.ProducerFencedError())
    assert fatal is not None and fatal.kind == "producer_fenced"
    manager.has_fatal_error = lambda: True
    manager.last_error = errors.OutOfOrderSequenceNumberError()
    state = KafkaPythonProducer.fatal_cause(python, None)
    assert state is not None and state.kind == "out_of_order_sequence"
