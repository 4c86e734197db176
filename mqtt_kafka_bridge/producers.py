"""The bridge's Kafka producer, one of two behind the same small interface (`bridge.producer`):

- `kafka-python` (the default): pure Python, nothing to install beyond the base dependencies.
- `confluent-kafka`: librdkafka in C (`pip install 'twinpipe[confluent]'`, included in the image).
  kafka-python's producer took about a quarter of the bridge's CPU; see docs/benchmarks.md.

Both are idempotent and wait for all in-sync replicas (acks=all), hash the device key with murmur2
as the Java client does (so switching keeps each device on its partition), and report every
record's outcome once to `on_delivery(context, error)`, with `error` None on success, from a thread
of their own, within `bridge.delivery_timeout_s`.

Each also says when it is in a fatal state (`fatal_cause`): an idempotent producer whose records
timed out can be left refusing everything it is given. librdkafka reports some of these as fatal
(`KafkaError.fatal()`, `_FATAL` to the error callback; "the client instance is no longer usable"),
and others, seen here after a Kafka outage longer than the delivery timeout, only as a
PRODUCER_FENCED failure of every record (librdkafka #2163 / #3584, confluent-kafka-python #1128).
kafka-python's transaction manager enters a FATAL_ERROR state and then fails every batch with the
error that caused it. Such a producer must be replaced: see delivery.py.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple, Protocol

from kafka import errors as kafka_errors
from kafka.errors import KafkaError

from twinpipe.clients import kafka_producer
from twinpipe.config import Config

OnDelivery = Callable[[Any, BaseException | None], None]
# How long send() may wait for room in the buffer or for topic metadata before NotAccepted.
MAX_BLOCK_MS = 10_000
REQUEST_TIMEOUT_MS = 30_000  # both clients' default; lowered to fit a shorter delivery timeout


class Fatal(NamedTuple):
    """Why a producer can deliver nothing any more: `kind` is a metric label (FATAL_KINDS)."""

    kind: str
    detail: str


FATAL_KINDS = (
    "producer_fenced", "invalid_producer_epoch", "unknown_producer_id", "out_of_order_sequence",
    "fatal", "no_delivery_report",
)  # fmt: skip


class NotAccepted(Exception):
    """The producer cannot take the record now (buffer full, no metadata yet): try again later."""


class Producer(Protocol):
    def send(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None,
        on_delivery: OnDelivery, context: Any,
    ) -> None: ...  # fmt: skip

    def flush(self, timeout_s: float) -> bool:
        """Wait until every record sent so far is delivered or failed; False if time ran out."""
        ...

    def fatal_cause(self, error: BaseException | None) -> Fatal | None:
        """Whether this producer is in a fatal state, judged by `error` (a delivery error it just
        reported, or the cause of a NotAccepted) and by its own state; None while it is usable."""
        ...

    def close(self, timeout_s: float) -> None: ...

    def abandon(self) -> None:
        """Drop everything it holds (each still reported, failed) and release it, without waiting."""
        ...


class KafkaPythonProducer:
    def __init__(self, config: Config) -> None:
        settings = config.bridge
        self._producer = kafka_producer(
            config.kafka,
            linger_ms=settings.linger_ms,
            batch_size=settings.batch_size,
            compression_type=None if settings.compression == "none" else settings.compression,
            max_block_ms=MAX_BLOCK_MS,
            delivery_timeout_ms=delivery_timeout_ms(config),
            request_timeout_ms=request_timeout_ms(config),
        )

    def send(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None,
        on_delivery: OnDelivery, context: Any,
    ) -> None:  # fmt: skip
        try:
            future = self._producer.send(topic, value=value, key=key, headers=headers)
        except KafkaError as exc:
            raise NotAccepted(str(exc)) from exc
        future.add_both(_report_kafka_python, on_delivery, context)

    def flush(self, timeout_s: float) -> bool:
        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaError:
            return False
        return True

    def fatal_cause(self, error: BaseException | None) -> Fatal | None:
        # The transaction manager (private, hence getattr) knows the fatal state; the error types
        # kafka-python always treats as fatal are the fallback.
        manager = getattr(self._producer, "_transaction_manager", None)
        in_fatal_state = bool(manager is not None and manager.has_fatal_error())
        if in_fatal_state and error is None:
            error = manager.last_error
        if in_fatal_state or isinstance(error, KAFKA_PYTHON_FATAL):
            return Fatal(_KAFKA_PYTHON_KINDS.get(type(error), "fatal"), f"{type(error).__name__}: {error}")
        return None

    def close(self, timeout_s: float) -> None:
        self._producer.close(timeout=timeout_s)

    def abandon(self) -> None:
        # close() flushes first and raises when that times out, before it would force anything; the
        # sender's force_close fails every batch it holds, after which close() has nothing to wait for.
        sender = getattr(self._producer, "_sender", None)
        if sender is not None:
            sender.force_close()
            sender.join(1)
        with contextlib.suppress(KafkaError):
            self._producer.close(timeout=0)


KAFKA_PYTHON_FATAL = (
    kafka_errors.ProducerFencedError,
    kafka_errors.ClusterAuthorizationFailedError,
    kafka_errors.TransactionalIdAuthorizationFailedError,
    kafka_errors.InvalidTxnStateError,
    kafka_errors.IllegalStateError,  # used after close
)
_KAFKA_PYTHON_KINDS: dict[type, str] = {
    kafka_errors.ProducerFencedError: "producer_fenced",
    kafka_errors.InvalidProducerEpochError: "invalid_producer_epoch",
    kafka_errors.UnknownProducerIdError: "unknown_producer_id",
    kafka_errors.OutOfOrderSequenceNumberError: "out_of_order_sequence",
}


def _report_kafka_python(on_delivery: OnDelivery, context: Any, result: Any) -> None:
    on_delivery(context, result if isinstance(result, BaseException) else None)


class ConfluentProducer:
    """librdkafka runs its own I/O threads; delivery reports and log lines are served by `poll`,
    which a thread of ours calls continuously, as kafka-python's I/O thread does."""

    def __init__(self, config: Config) -> None:
        from confluent_kafka import KafkaException
        from confluent_kafka import Producer as LibrdkafkaProducer  # optional: checked by the config

        self._refused = (BufferError, KafkaException)
        self._fatal: Fatal | None = None  # from the error callback
        self._producer = LibrdkafkaProducer(
            librdkafka_settings(config) | {"logger": _FacilityLog(), "error_cb": self._on_error}
        )
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._serve_deliveries, name="kafka-deliveries", daemon=True)
        self._poller.start()

    def _serve_deliveries(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.1)

    def send(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None,
        on_delivery: OnDelivery, context: Any,
    ) -> None:  # fmt: skip
        try:
            self._producer.produce(
                topic,
                value,
                key,
                headers=headers,
                on_delivery=partial(_report_confluent, on_delivery, context),
            )
        except self._refused as exc:
            raise NotAccepted(str(exc)) from exc

    def flush(self, timeout_s: float) -> bool:
        return self._producer.flush(timeout_s) == 0

    def _on_error(self, error: Any) -> None:
        """librdkafka's error callback: connection trouble (logged by librdkafka itself) and, once,
        a fatal error (code _FATAL, the underlying error in its text)."""
        if error.fatal() and self._fatal is None:
            self._fatal = Fatal("fatal", f"{error.name()}: {error.str()}")

    def fatal_cause(self, error: BaseException | None) -> Fatal | None:
        kafka_error = getattr(error, "kafka_error", None)
        if kafka_error is None and error is not None and error.args:
            kafka_error = error.args[0] if hasattr(error.args[0], "fatal") else None
        if kafka_error is not None:
            kind = confluent_fatal_kind(kafka_error.code(), kafka_error.fatal())
            if kind is not None:
                return Fatal(kind, f"{kafka_error.name()}: {kafka_error.str()}")
        return self._fatal

    def close(self, timeout_s: float) -> None:
        self.flush(timeout_s)
        self._closed.set()
        self._poller.join(1)

    def abandon(self) -> None:
        self._producer.purge()  # each purged record is reported failed (_PURGE_QUEUE / _PURGE_INFLIGHT)
        self._producer.poll(0)
        self._closed.set()
        self._poller.join(1)


# librdkafka codes after which an idempotent producer delivers nothing more (rdkafka.h):
# PRODUCER_FENCED 90, INVALID_PRODUCER_EPOCH 47, UNKNOWN_PRODUCER_ID 59, OUT_OF_ORDER_SEQUENCE_NUMBER 45,
# INVALID_PRODUCER_ID_MAPPING 49, _FENCED -144, _FATAL -150 (and any error flagged fatal()).
_CONFLUENT_KINDS = {
    90: "producer_fenced", -144: "producer_fenced", 47: "invalid_producer_epoch",
    59: "unknown_producer_id", 49: "unknown_producer_id", 45: "out_of_order_sequence", -150: "fatal",
}  # fmt: skip


def confluent_fatal_kind(code: int, fatal: bool) -> str | None:
    """The FATAL_KINDS label of a librdkafka error code, or None when the producer survives it."""
    kind = _CONFLUENT_KINDS.get(code)
    return kind if kind is not None else ("fatal" if fatal else None)


class _FacilityLog:
    """Where librdkafka's log lines go: the logger `librdkafka.<facility>` (FAIL, ERROR, ...), in
    the stage's log format. The stage's RepeatFilter lets each facility through once per 30 s, as it
    does kafka-python's lines: during an outage librdkafka logs every refused reconnect."""

    def log(self, level: int, _template: str, facility: str, _client: str, message: str) -> None:
        logging.getLogger(f"librdkafka.{facility}").log(level, "%s", message)


def _report_confluent(on_delivery: OnDelivery, context: Any, error: Any, _message: Any) -> None:
    on_delivery(context, None if error is None else DeliveryFailed(error))


class DeliveryFailed(Exception):
    """librdkafka gave up on a record (its KafkaError is not an exception; kept in `kafka_error`)."""

    def __init__(self, kafka_error: Any) -> None:
        super().__init__(kafka_error.str() if hasattr(kafka_error, "str") else str(kafka_error))
        self.kafka_error = kafka_error


def delivery_timeout_ms(config: Config) -> int:
    return round(config.bridge.delivery_timeout_s * 1000)


def request_timeout_ms(config: Config) -> int:
    """At most the delivery timeout less lingering (kafka-python requires it; librdkafka agrees)."""
    return min(REQUEST_TIMEOUT_MS, max(100, delivery_timeout_ms(config) - config.bridge.linger_ms))


def librdkafka_settings(config: Config) -> dict[str, Any]:
    """The bridge's and the Kafka section's settings in librdkafka's names."""
    kafka, bridge = config.kafka, config.bridge
    settings: dict[str, Any] = {
        "bootstrap.servers": ",".join(kafka.bootstrap_servers),
        "acks": "all",
        "linger.ms": bridge.linger_ms,
        "batch.size": bridge.batch_size,
        "compression.type": bridge.compression,
        "partitioner": "murmur2_random",  # the Java client's and kafka-python's choice
        "message.timeout.ms": delivery_timeout_ms(config),
        "request.timeout.ms": request_timeout_ms(config),
        "enable.idempotence": True,  # as kafka-python 3 does by default: retries add no duplicates
        "security.protocol": kafka.security_protocol.lower(),
    }
    security = kafka.security()
    if kafka.sasl_mechanism:
        settings |= {
            "sasl.mechanism": kafka.sasl_mechanism,
            "sasl.username": security["sasl_plain_username"],
            "sasl.password": security["sasl_plain_password"],
        }
    names = {"ssl_cafile": "ssl.ca.location", "ssl_certfile": "ssl.certificate.location",
             "ssl_keyfile": "ssl.key.location"}  # fmt: skip
    settings |= {names[key]: value for key, value in security.items() if key in names and value}
    return settings


PRODUCERS: dict[str, Callable[[Config], Producer]] = {
    "kafka-python": KafkaPythonProducer,
    "confluent-kafka": ConfluentProducer,
}
