"""The way down: commands from Kafka (`bridge.downlink.command_topic`) to the boards' MQTT topics.

One thread, one batch at a time, in three named steps (at least once):
1. **publish** each command to `twin/{device}/command`, QoS 1, MQTT 5 Message Expiry Interval =
   its remaining life (s, rounded up), Correlation Data = its id, Response Topic =
   `twin/{device}/command/events`; the payload unchanged. A command already expired is not
   published (an `expired` event instead); one that is no valid command goes to the dead-letter
   topic with the reason;
2. **evidence**: after the broker's PUBACK, a `sent` event to `events_topic` (`failed` when the broker
   refused it or had no subscriber for it), produced with acks=all and flushed;
3. **commit** the batch's offsets.
Commands go out on an MQTT connection of their own (`bridge.client_id` + `-downlink`, TCP_NODELAY),
so the telemetry connection is untouched and a command's PUBLISH does not wait behind it: paho
leaves Nagle's algorithm on, and on the telemetry connection, busy with small PUBACKs, a PUBLISH
waited for the broker's delayed TCP ACK, 30-40 ms measured (bench/command_roundtrip.py).
A crash before 3 publishes the batch again: harmless, the board ignores a command id it has applied.
When the broker does not acknowledge within `publish_timeout_s` (disconnected) or Kafka does not
take the events, nothing is committed: the consumer seeks back and the batch is tried again after a
backoff.
The consumer group is watched: a downlink with no partition of `command_topic` assigned for longer
than `kafka.session_timeout_ms` (a group whose join waits on members that died without leaving, kill
-9 twice in a row) or whose batch has failed for that long is not ready (/readyz says why); with
no partition for twice that, the consumer is closed and a new one (a new member id) joins again.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from mqtt_kafka_bridge import metrics
from twinpipe import deadletter
from twinpipe.backoff import Backoff
from twinpipe.clients import mqtt_client
from twinpipe.command_messages import (
    Command,
    CommandError,
    CommandEvent,
    decode_command,
    encode_event,
    remaining_s,
)
from twinpipe.config import Config
from twinpipe.ratelog import ThrottledLog

log = logging.getLogger("mqtt_kafka_bridge.downlink")

STAGE = "mqtt_kafka_bridge"
NO_MATCHING_SUBSCRIBERS = 0x10  # MQTT 5 PUBACK reason: accepted, but nobody subscribed to the topic


@dataclass(slots=True)
class Published:
    command: Command
    topic: str
    sent_at: float  # monotonic, for the PUBACK latency
    reason: ReasonCode | None = None  # the PUBACK's, once it came


def message_properties(command: Command, events_topic: str, now_ns: int) -> Properties:
    """MQTT 5 PUBLISH properties of a command (call only while it has life left)."""
    properties = Properties(PacketTypes.PUBLISH)
    properties.MessageExpiryInterval = remaining_s(command.expires_ns, now_ns)
    properties.CorrelationData = command.id.encode()
    properties.ResponseTopic = events_topic
    return properties


def stall_reason(
    now: float,
    unassigned_since: float | None,
    failing_since: float | None,
    limit_s: float,
    last_pass: float | None = None,
    pass_limit_s: float = float("inf"),
) -> str | None:
    """Why the downlink cannot make progress (None: it can). Times are monotonic s; `unassigned_since`
    is when the consumer last had no partition assigned (None: it has some), `failing_since` when the
    batch it holds first failed (None: the last one was handled); either for longer than `limit_s`
    (the group's session timeout) is a stall; so is a loop whose last pass began (`last_pass`) longer
    than `pass_limit_s` ago (blocked inside a call: the longest a pass may take)."""
    if last_pass is not None and now - last_pass > pass_limit_s:
        return f"the downlink loop has been blocked for {now - last_pass:.0f} s (no poll)"
    if unassigned_since is not None and now - unassigned_since > limit_s:
        return (
            f"no partition of the command topic assigned for {now - unassigned_since:.0f} s "
            f"(longer than kafka.session_timeout_ms {limit_s * 1000:.0f}): the consumer group does not "
            "settle; joining again with a new consumer"
        )
    if failing_since is not None and now - failing_since > limit_s:
        return f"the commands read have not been handled for {now - failing_since:.0f} s (see the log)"
    return None


def puback_outcome(reason: ReasonCode | None, topic: str) -> tuple[str, str]:
    """(event state, detail) for a command the broker answered with `reason` (None: no answer)."""
    if reason is None:
        return "failed", "no PUBACK from the broker"
    if reason.value == NO_MATCHING_SUBSCRIBERS:
        return "failed", (
            f"the broker had no subscriber for {topic} and dropped it: no publisher has a session "
            "for this device (publisher.commands.enabled, its device id)"
        )
    if reason.is_failure:
        return "failed", f"the broker refused it: {reason}"
    return "sent", ""


class Downlink:
    def __init__(
        self,
        config: Config,
        consumer: Callable[[], KafkaConsumer],
        producer: Callable[[], KafkaProducer],
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._config = config
        self._settings = config.bridge.downlink
        self._client = mqtt_client(config.mqtt, f"{config.bridge.client_id}-downlink")
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._connected = threading.Event()
        self._new_consumer = consumer
        self._consumer = consumer()
        self._limit_s = config.kafka.session_timeout_ms / 1000
        self._unassigned_since: float | None = time.monotonic()
        self._renewed_at = time.monotonic()
        self._failing_since: float | None = None
        self._last_pass = time.monotonic()
        # The longest one pass may take: PUBACKs, the events' delivery, a commit (Kafka's request
        # timeout, 30 s) and a group join (the session timeout).
        self._pass_limit_s = (
            self._settings.publish_timeout_s + config.bridge.delivery_timeout_s + 30 + 2 * self._limit_s
        )
        self._new_producer = producer
        self._producer: KafkaProducer | None = producer()
        self._clock_ns = clock_ns
        self._lock = threading.Condition()
        self._published: dict[int, Published] = {}  # by MQTT message id, awaiting PUBACK
        # PUBACKs of message ids not registered (yet): cleared at each batch's start, so a late one of
        # an earlier batch cannot answer a reused id (a batch uses far fewer than paho's 65535 ids)
        self._early: dict[int, ReasonCode] = {}
        self._throttled = ThrottledLog(log)
        self._thread = threading.Thread(target=self._loop, name="downlink", daemon=True)
        self._stop = threading.Event()

    def start(self) -> None:
        mqtt_config = self._config.mqtt
        # No persistent session needed: a command without its PUBACK is published again.
        self._client.connect_async(mqtt_config.host, mqtt_config.port, mqtt_config.keepalive_s)
        self._client.loop_start()
        self._consumer.subscribe([self._settings.command_topic])
        self._thread.start()

    def stop(self, timeout_s: float) -> None:
        """Stop within about `timeout_s` (s): the loop ends its pass (every wait in it is bounded), then
        the consumer leaves its group and the producer flushes, each within what is left."""
        deadline = time.monotonic() + timeout_s
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        left_ms = int(max(0.1, deadline - time.monotonic()) * 1000)
        if self._thread.is_alive():  # a KafkaConsumer is not thread-safe: leave it to the process exit
            log.warning("the downlink did not stop within %g s; exiting without leaving the group", timeout_s)
        else:
            try:
                self._consumer.close(autocommit=False, timeout_ms=left_ms)
            except KafkaError as exc:
                log.warning("cannot leave the command consumer group cleanly: %s", exc)
        if self._producer is not None:
            self._producer.close(timeout=max(0.1, deadline - time.monotonic()))
        self._client.disconnect()
        self._client.loop_stop()

    def ready(self) -> bool | str:
        if not self._connected.is_set():
            return False
        return (
            stall_reason(time.monotonic(), self._unassigned_since, self._failing_since, self._limit_s) or True
        )

    def alive(self) -> bool | str:
        """False once the thread died; the reason while its loop is blocked (a restart recovers)."""
        if self._stop.is_set():
            return True
        if not self._thread.is_alive():
            return False
        now = time.monotonic()
        if now - self._last_pass > self._pass_limit_s:
            return f"the downlink loop has been blocked for {now - self._last_pass:.0f} s (no poll)"
        return True

    # --- paho network thread ---

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            log.error("MQTT broker refused the downlink's connection: %s", reason)
            return
        sock = client.socket()
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._connected.set()

    def _on_disconnect(self, *_args: Any) -> None:
        self._connected.clear()

    def _on_publish(self, _client: mqtt.Client, _userdata: Any, mid: int, reason: Any, _props: Any) -> None:
        self.on_publish(mid, reason)

    def on_publish(self, mid: int, reason: ReasonCode) -> None:
        with self._lock:
            published = self._published.get(mid)
            if published is None:  # not registered yet (or a batch given up): kept for _publish
                self._early[mid] = reason
                return
            published.reason = reason
            self._lock.notify_all()

    # --- downlink thread ---

    def _watch_group(self) -> None:
        """Note whether partitions are assigned; after twice the session timeout without any, a new
        consumer (a new member id) joins: the old one may wait on a join that never completes."""
        now = time.monotonic()
        if self._consumer.assignment():
            self._unassigned_since = None
            return
        if self._unassigned_since is None:
            self._unassigned_since = now
            self._renewed_at = now
        if now - self._renewed_at <= 2 * self._limit_s:
            return
        log.warning(
            "no partition of %s assigned for %.0f s: joining the group %s again with a new consumer",
            self._settings.command_topic, now - self._unassigned_since, self._settings.group_id,
        )  # fmt: skip
        metrics.DOWNLINK_REJOINS.inc()
        try:
            self._consumer.close(autocommit=False, timeout_ms=int(self._limit_s * 1000))
        except KafkaError as exc:
            log.warning("cannot leave the command consumer group: %s", exc)
        self._consumer = self._new_consumer()
        self._consumer.subscribe([self._settings.command_topic])
        self._renewed_at = time.monotonic()

    def _loop(self) -> None:
        backoff = Backoff(0.5, 10.0)
        while not self._stop.is_set():
            self._last_pass = time.monotonic()
            self._watch_group()
            try:
                batches = self._consumer.poll(timeout_ms=500, max_records=self._settings.max_batch)
            except KafkaError as exc:
                self._throttled.warning("poll", "cannot read %s: %s", self._settings.command_topic, exc)
                self._stop.wait(backoff.next_delay())
                continue
            if not batches:
                continue
            records = [record for batch in batches.values() for record in batch]
            if self._handle(records):
                self._failing_since = None
                backoff = Backoff(0.5, 10.0)
                continue
            if self._failing_since is None:
                self._failing_since = time.monotonic()
            # Not committed: read the batch again from its first offsets, after a pause.
            for partition, batch in batches.items():
                try:
                    self._consumer.seek(partition, batch[0].offset)
                except (
                    KafkaError,
                    AssertionError,
                    ValueError,
                ):  # revoked meanwhile: its new owner reads from the committed offset
                    continue
            self._stop.wait(backoff.next_delay())

    def _handle(self, records: list[Any]) -> bool:
        """Publish, produce the evidence, commit; False when the batch must be tried again."""
        events: list[CommandEvent] = []
        letters: list[tuple[Any, str]] = []
        published: list[Published] = []
        with self._lock:
            self._early.clear()
        for record in records:
            try:
                command = decode_command(record.value or b"", self._config.bridge.max_payload_bytes)
                key = record.key.decode("utf-8", "replace") if record.key is not None else None
                if key is not None and key != command.device:
                    raise CommandError(
                        f"record key {key!r} differs from the command's device {command.device!r}"
                    )
            except CommandError as exc:
                letters.append((record, str(exc)))
                continue
            now_ns = self._clock_ns()
            if command.expired(now_ns):
                late_s = (now_ns - command.expires_ns) / 1e9
                events.append(
                    self._event(command, "expired", f"expired {late_s:.1f} s before the bridge read it")
                )
                continue
            item = self._publish(command, record.value, now_ns)
            if item is None:
                self._forget(published)
                return False
            published.append(item)
        if not self._await_pubacks(published):
            return False
        for item in published:
            state, detail = puback_outcome(item.reason, item.topic)
            if state == "failed":
                self._throttled.warning(
                    "refused", "command %s to %s: %s", item.command.id, item.topic, detail
                )
            events.append(self._event(item.command, state, detail))
        if not self._produce(letters, events):
            return False
        offsets = {}
        for record in records:
            offsets[TopicPartition(record.topic, record.partition)] = OffsetAndMetadata(
                record.offset + 1, "", -1
            )
        try:
            self._consumer.commit(offsets)
        except KafkaError as exc:
            # The events are in Kafka; the commands will be published again (the board ignores repeats).
            self._throttled.warning("commit", "cannot commit command offsets: %s", exc)
        return True

    def _publish(self, command: Command, payload: bytes, now_ns: int) -> Published | None:
        """Hand the command (its Kafka bytes, unchanged) to the MQTT client, registered for its PUBACK."""
        if not self._connected.wait(self._settings.publish_timeout_s):
            self._throttled.warning("mqtt", "commands wait: not connected to the MQTT broker")
            return None
        settings = self._settings
        topic = settings.mqtt_command_topic.format(device=command.device)
        properties = message_properties(
            command, settings.mqtt_events_topic.format(device=command.device), now_ns
        )
        # Not under self._lock: paho's publish takes paho's own lock, which its network thread holds
        # while it calls on_publish (that takes self._lock): holding both in the other order
        # deadlocked the downlink for good in a burst (issue 15). A PUBACK that comes before the
        # registration below waits in self._early.
        sent_at = time.monotonic()
        info = self._client.publish(topic, payload, qos=1, properties=properties)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            self._throttled.warning("publish", "cannot publish to %s: %s", topic, mqtt.error_string(info.rc))
            return None
        with self._lock:
            item = self._published[info.mid] = Published(
                command, topic, sent_at, self._early.pop(info.mid, None)
            )
        return item

    def _await_pubacks(self, published: list[Published]) -> bool:
        deadline = time.monotonic() + self._settings.publish_timeout_s
        with self._lock:
            try:
                while any(item.reason is None for item in published):
                    left = deadline - time.monotonic()
                    if left <= 0 or self._stop.is_set():
                        self._throttled.warning(
                            "puback",
                            "no PUBACK for %d command(s) within %g s (bridge.downlink.publish_timeout_s); "
                            "publishing them again",
                            sum(item.reason is None for item in published),
                            self._settings.publish_timeout_s,
                        )
                        return False
                    self._lock.wait(min(left, 0.5))
            finally:
                self._forget(published)
        now = time.monotonic()
        for item in published:
            metrics.COMMAND_PUBACK_SECONDS.observe(now - item.sent_at)
        return True

    def _forget(self, published: list[Published]) -> None:
        """Stop waiting for these PUBACKs (answered, or to be published again)."""
        with self._lock:
            for mid in [mid for mid, item in self._published.items() if item in published]:
                del self._published[mid]

    def _event(self, command: Command, state: str, detail: str = "") -> CommandEvent:
        metrics.COMMANDS.labels(state).inc()
        return CommandEvent(command.id, command.device, state, self._clock_ns(), "bridge", detail)

    def _send_event(self, producer: KafkaProducer, event: CommandEvent) -> Any:
        return producer.send(
            self._settings.events_topic, key=event.device.encode(), value=encode_event(event)
        )

    def _dead_letter(self, producer: KafkaProducer, record: Any, reason: str) -> Any:
        metrics.COMMANDS.labels("dead_letter").inc()
        where = f"{record.topic}/{record.partition}/{record.offset}"
        self._throttled.warning("dead-letter", "dead letter (invalid command) from %s: %s", where, reason)
        return producer.send(
            self._config.kafka.dead_letter_topic,
            key=record.key,
            value=(record.value or b"")[: self._config.bridge.max_payload_bytes],
            headers=deadletter.headers(reason, STAGE, source=where),
        )

    def _produce(self, letters: list[tuple[Any, str]], events: list[CommandEvent]) -> bool:
        """Dead letters and events into Kafka, every one acknowledged (acks=all); False (logged) when
        one did not land. The producer is then replaced: an idempotent producer can be left refusing
        everything after an outage (see delivery.py), and the batch is tried again anyway."""
        try:
            if self._producer is None:
                self._producer = self._new_producer()
            producer = self._producer
            futures = [self._dead_letter(producer, record, reason) for record, reason in letters]
            futures += [self._send_event(producer, event) for event in events]
            producer.flush(timeout=self._config.bridge.delivery_timeout_s)
            for future in futures:
                future.get(timeout=0)
        except KafkaError as exc:
            self._throttled.warning("events", "cannot produce command events: %s; trying again", exc)
            if self._producer is not None:
                self._producer.close(timeout=0)
                self._producer = None
            return False
        return True
