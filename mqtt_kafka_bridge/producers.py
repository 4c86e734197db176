"""The bridge's Kafka producer, one of two behind the same small interface (`bridge.producer`):

- `kafka-python` (the default): pure Python, nothing to install beyond the base dependencies.
- `confluent-kafka`: librdkafka in C (`pip install 'twinpipe[confluent]'`, included in the image).
  kafka-python's producer took about a quarter of the bridge's CPU; see docs/benchmarks.md.

Both are idempotent and wait for all in-sync replicas (acks=all), hash the device key with murmur2
as the Java client does (so switching keeps each device on its partition), and report every
record's outcome once to `on_delivery(context, error)`, with `error` None on success, from a thread
of their own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

from kafka.errors import KafkaError

from twinpipe.clients import kafka_producer
from twinpipe.config import Config

OnDelivery = Callable[[Any, BaseException | None], None]
# kafka-python's delivery_timeout_ms default; librdkafka's message.timeout.ms is set to match.
DELIVERY_TIMEOUT_MS = 120_000
# How long send() may wait for room in the buffer or for topic metadata before NotAccepted.
MAX_BLOCK_MS = 10_000


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

    def close(self, timeout_s: float) -> None: ...


class KafkaPythonProducer:
    def __init__(self, config: Config) -> None:
        settings = config.bridge
        self._producer = kafka_producer(
            config.kafka,
            linger_ms=settings.linger_ms,
            batch_size=settings.batch_size,
            compression_type=None if settings.compression == "none" else settings.compression,
            max_block_ms=MAX_BLOCK_MS,
            delivery_timeout_ms=DELIVERY_TIMEOUT_MS,
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

    def close(self, timeout_s: float) -> None:
        self._producer.close(timeout=timeout_s)


def _report_kafka_python(on_delivery: OnDelivery, context: Any, result: Any) -> None:
    on_delivery(context, result if isinstance(result, BaseException) else None)


class ConfluentProducer:
    """librdkafka runs its own I/O threads; delivery reports and log lines are served by `poll`,
    which a thread of ours calls continuously, as kafka-python's I/O thread does."""

    def __init__(self, config: Config) -> None:
        from confluent_kafka import KafkaException
        from confluent_kafka import Producer as LibrdkafkaProducer  # optional: checked by the config

        self._refused = (BufferError, KafkaException)
        self._producer = LibrdkafkaProducer(librdkafka_settings(config) | {"logger": _FacilityLog()})
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

    def close(self, timeout_s: float) -> None:
        self.flush(timeout_s)
        self._closed.set()
        self._poller.join(1)


class _FacilityLog:
    """Where librdkafka's log lines go: the logger `librdkafka.<facility>` (FAIL, ERROR, ...), in
    the stage's log format. The stage's RepeatFilter lets each facility through once per 30 s, as it
    does kafka-python's lines: during an outage librdkafka logs every refused reconnect."""

    def log(self, level: int, _template: str, facility: str, _client: str, message: str) -> None:
        logging.getLogger(f"librdkafka.{facility}").log(level, "%s", message)


def _report_confluent(on_delivery: OnDelivery, context: Any, error: Any, _message: Any) -> None:
    on_delivery(context, None if error is None else DeliveryFailed(str(error)))


class DeliveryFailed(Exception):
    """librdkafka gave up on a record (its KafkaError is not an exception)."""


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
        "message.timeout.ms": DELIVERY_TIMEOUT_MS,
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
