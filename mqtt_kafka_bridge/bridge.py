"""The bridge: MQTT messages in, Kafka records out, each MQTT message acknowledged after Kafka has it.

Threads: paho's network thread only queues incoming messages; one forwarding thread validates them
and hands records to the Kafka producer; the producer's I/O thread reports deliveries, which release
the MQTT acknowledgements in order. The broker never has more than `bridge.max_inflight`
unacknowledged messages out to us (MQTT 5 Receive Maximum), which bounds every queue here.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.client import topic_matches_sub
from paho.mqtt.subscribeoptions import SubscribeOptions

from mqtt_kafka_bridge import metrics
from mqtt_kafka_bridge.acks import InOrderAcks, Pending
from mqtt_kafka_bridge.delivery import Delivery, Record
from mqtt_kafka_bridge.downlink import Downlink
from mqtt_kafka_bridge.producers import Producer
from mqtt_kafka_bridge.routing import Router, RoutingError
from twinpipe import deadletter
from twinpipe.clients import connect_properties, mqtt_client
from twinpipe.command_messages import CommandError, decode_event
from twinpipe.config import Config
from twinpipe.config.bridge import topic_filter
from twinpipe.envelope import PROBE_DEVICE, TRACE_BRIDGE, EnvelopeError, decode, encode
from twinpipe.health import Check
from twinpipe.metrics import sample
from twinpipe.ratelog import ThrottledLog
from twinpipe.takeover import SessionGuard

log = logging.getLogger("mqtt_kafka_bridge")

STAGE = "mqtt_kafka_bridge"


@dataclass(slots=True)
class Incoming:
    mqtt_topic: str
    payload: bytes
    received_ns: int
    pending: Pending | None
    retained: bool = False  # replayed from the broker's retained store, not published now


_STOP = object()
_RECOVER = object()  # a delivery failed: re-send (Delivery.recover) before anything new
RETAINED_TOPICS_LOGGED = 1000  # topics whose retained message is logged by name; further ones throttled


class Bridge:
    def __init__(
        self,
        config: Config,
        producer: Producer,
        replacement: Callable[[threading.Event], Producer | None],
        downlink: Callable[[], Downlink] | None = None,
    ) -> None:
        """`replacement(stop)`: a new producer for one found in a fatal state (see delivery.py).
        `downlink()`: the command direction (bridge.downlink.enabled)."""
        self._config = config
        settings = config.bridge
        # Command events from the publishers: forwarded to Kafka as such, not as telemetry.
        self._events_filter = topic_filter(settings.downlink.mqtt_events_topic) if downlink else None
        self._router = Router(
            settings.routes,
            config.kafka.telemetry_topic,
            settings.shared_group,
            probe_topic=config.publisher.topic_template.format(device=PROBE_DEVICE),
            probe_device=PROBE_DEVICE,
        )
        self._client = mqtt_client(config.mqtt, settings.client_id, manual_ack=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._session = SessionGuard(
            self._client,
            settings.client_id,
            "give each bridge replica its own bridge.client_id (TWINPIPE__BRIDGE__CLIENT_ID) and set "
            "bridge.shared_group to split the messages between them",
            "bridge",
            (config.mqtt.reconnect_min_s, config.mqtt.reconnect_max_s),
        )
        self._acks = InOrderAcks(lambda mid: self._client.ack(mid, 1))
        self._inbox: queue.SimpleQueue[Incoming | object] = queue.SimpleQueue()
        self._kafka = Delivery(
            producer,
            replacement,
            self._delivered,
            lambda: self._inbox.put(_RECOVER),
            settings.delivery_timeout_s,
        )
        self._intake = threading.Lock()
        self._stopping = False
        self._disconnected = threading.Event()
        self._throttled = ThrottledLog(log)
        self._retained_topics: set[str] = set()  # logged once each
        self._forwarder = threading.Thread(target=self._forward_loop, name="forwarder", daemon=True)
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        metrics.UNACKED.set_function(lambda: len(self._acks))
        metrics.QUEUED.set_function(self._inbox.qsize)
        metrics.MQTT_CONNECTED.set_function(self._connected.is_set)
        self._downlink = downlink() if downlink else None

    def __enter__(self) -> Bridge:
        mqtt_config, settings = self._config.mqtt, self._config.bridge
        self._client.connect_async(
            mqtt_config.host,
            mqtt_config.port,
            mqtt_config.keepalive_s,
            clean_start=False,
            properties=connect_properties(settings.session_expiry_s, settings.max_inflight),
        )
        self._client.loop_start()
        if self._downlink is not None:
            self._downlink.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._downlink is not None:
            self._downlink.stop(self._config.bridge.shutdown_timeout_s)
        self._client.disconnect()
        self._disconnected.wait(5)
        self._client.loop_stop()
        self._kafka.close(5)
        log.info(
            "stopped: %d delivered to Kafka (%d of them dead letters), %d failed deliveries retried, "
            "%d unacknowledged",
            sample("twinpipe_bridge_records_delivered_total"),
            sum(
                sample("twinpipe_bridge_dead_letters_total", kind=kind) for kind in metrics.DEAD_LETTER_KINDS
            ),
            sample("twinpipe_bridge_errors_total", kind="delivery"),
            len(self._acks),
        )

    def health_checks(self) -> dict[str, Check]:
        checks: dict[str, Check] = {"forwarder": self._forwarder.is_alive}
        if self._downlink is not None:
            checks["downlink"] = self._downlink.alive
        return checks

    def ready_checks(self) -> dict[str, Check]:
        """Ready once subscribed: until then the broker has no session to queue messages in for us,
        so readings published on a first start would be dropped. Compose starts the publisher after."""
        return {
            "mqtt": self._connected.is_set,
            "subscribed": self._subscribed.is_set,
            "session": self._session.ready,
            "kafka": self._kafka.ready,
        } | ({"downlink_mqtt": self._downlink.ready} if self._downlink is not None else {})

    def run(self, stop: threading.Event) -> None:
        self._forwarder.start()
        stop.wait()
        self._shutdown(self._forwarder)

    def _shutdown(self, forwarder: threading.Thread) -> None:
        """Stop taking messages, deliver what was taken, acknowledge it; the rest stays in the session."""
        deadline = time.monotonic() + self._config.bridge.shutdown_timeout_s
        with self._intake:
            self._stopping = True
            self._inbox.put(_STOP)
        self._kafka.stop.set()  # no more re-sends: what failed stays in the MQTT session
        forwarder.join(max(0.0, deadline - time.monotonic()))
        if not self._kafka.flush(max(0.1, deadline - time.monotonic())):
            log.warning("shutdown: flush to Kafka incomplete; unacknowledged messages stay queued in MQTT")

    # --- paho network thread ---

    def _on_connect(self, client: mqtt.Client, _userdata: Any, flags: Any, reason: Any, _props: Any) -> None:
        where = f"{self._config.mqtt.host}:{self._config.mqtt.port}"
        if reason.is_failure:
            log.error("MQTT broker %s refused the connection: %s", where, reason)
            return
        self._connected.set()
        self._session.connected()
        log.info(
            "connected to MQTT broker %s (session %s)", where, "resumed" if flags.session_present else "new"
        )
        # Retain As Published off (the default, explicit here): a message carries the retain flag only
        # when it is the broker's stored copy replayed on subscribing, which is how those are told apart.
        options = SubscribeOptions(
            qos=1, retainAsPublished=False, retainHandling=SubscribeOptions.RETAIN_SEND_ON_SUBSCRIBE
        )
        client.subscribe([(topic, options) for topic in self._subscriptions()])

    def _subscriptions(self) -> list[str]:
        topics = self._router.subscriptions()
        if self._events_filter is not None:
            prefix = f"$share/{self._config.bridge.shared_group}/" if self._config.bridge.shared_group else ""
            topics.append(prefix + self._events_filter)
        return topics

    def _on_disconnect(
        self, client: mqtt.Client, _userdata: Any, flags: Any, reason: Any, _props: Any
    ) -> None:
        self._connected.clear()
        self._subscribed.clear()
        self._acks.reset()
        taken_over = self._session.disconnected(reason, flags)  # counted, and logged once per episode
        if reason.is_failure and not taken_over:
            log.warning("disconnected from MQTT broker (%s); reconnecting", reason)
        self._disconnected.set()

    def _on_subscribe(
        self, _client: mqtt.Client, _userdata: Any, _mid: int, reasons: list, _props: Any
    ) -> None:
        refused = [
            (topic, reason)
            for topic, reason in zip(self._subscriptions(), reasons, strict=False)
            if reason.is_failure
        ]
        for topic, reason in refused:
            log.error("MQTT broker refused the subscription to %s: %s", topic, reason)
        if not refused:
            self._subscribed.set()

    def _on_message(self, client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        received_ns = time.time_ns()
        with self._intake:
            if self._stopping:
                return  # not acknowledged: the broker redelivers it to the next session
            pending = self._acks.received(message.mid) if message.qos > 0 else None
            self._inbox.put(
                Incoming(message.topic, message.payload, received_ns, pending, bool(message.retain))
            )
        metrics.RECEIVED.inc()
        metrics.RECEIVED_BYTES.inc(len(message.payload))

    # --- forwarding thread ---

    def _forward_loop(self) -> None:
        while (item := self._inbox.get()) is not _STOP:
            if item is _RECOVER:
                self._kafka.recover()
            elif isinstance(item, Incoming) and item.retained:
                self._ignore_retained(item)
            elif isinstance(item, Incoming):
                self._kafka.send(self.to_record(item))

    def _ignore_retained(self, incoming: Incoming) -> None:
        """A retained message replayed on (re)subscribing is the broker's last-value copy, not a new
        reading: it was forwarded when it was published (if we were subscribed then), and would
        otherwise come again on every reconnect. Acknowledged, counted, and logged once per topic."""
        metrics.IGNORED.labels("retained").inc()
        topic = incoming.mqtt_topic
        if topic not in self._retained_topics and len(self._retained_topics) < RETAINED_TOPICS_LOGGED:
            self._retained_topics.add(topic)
            log.warning(
                "ignored the retained message on %s (%d bytes): the broker replays it on every "
                "subscription, it is not a new reading (twinpipe publishers never retain). "
                "Clear it with: mosquitto_pub -r -n -t '%s'",
                topic,
                len(incoming.payload),
                topic,
            )
        elif topic not in self._retained_topics:
            self._throttled.warning(
                "retained", "ignored a retained message on %s (see earlier warnings)", topic
            )
        if incoming.pending is not None:
            self._acks.delivered(incoming.pending)

    def to_record(self, incoming: Incoming) -> Record:
        """Validate and route a message: its Kafka record, or a dead letter saying what is wrong."""
        limit = self._config.bridge.max_payload_bytes
        if self._events_filter is not None and topic_matches_sub(self._events_filter, incoming.mqtt_topic):
            return self._command_event(incoming)
        try:
            envelope = decode(incoming.payload, limit)
            topic = self._router.kafka_topic(incoming.mqtt_topic, envelope.device)
        except EnvelopeError as exc:
            return self._dead_letter(incoming, exc.reason, exc.kind)
        except RoutingError as exc:
            return self._dead_letter(incoming, str(exc), exc.kind)
        envelope.trace[TRACE_BRIDGE] = incoming.received_ns
        return Record(topic, envelope.device.encode(), encode(envelope), None, incoming.pending)

    def _command_event(self, incoming: Incoming) -> Record:
        """A publisher's command event: checked as one (its device must be the topic's), then to
        bridge.downlink.events_topic keyed by device, its bytes unchanged."""
        try:
            event = decode_event(incoming.payload, self._config.bridge.max_payload_bytes)
        except CommandError as exc:
            return self._dead_letter(incoming, str(exc), "invalid_command_event")
        level = self._config.bridge.downlink.mqtt_events_topic.split("/").index("{device}")
        levels = incoming.mqtt_topic.split("/")
        if level >= len(levels) or levels[level] != event.device:
            return self._dead_letter(
                incoming,
                f"command event for device {event.device!r} on {incoming.mqtt_topic!r}, "
                "which names another device",
                "device_mismatch",
            )
        metrics.COMMAND_EVENTS_FORWARDED.inc()
        topic = self._config.bridge.downlink.events_topic
        return Record(topic, event.device.encode(), incoming.payload, None, incoming.pending)

    def _dead_letter(self, incoming: Incoming, reason: str, kind: str) -> Record:
        metrics.DEAD_LETTERS.labels(kind).inc()
        self._throttled.warning(
            "dead-letter", "dead letter (%s) from %s: %s", kind, incoming.mqtt_topic, reason
        )
        limit = self._config.bridge.max_payload_bytes
        return Record(
            self._config.kafka.dead_letter_topic,
            None,
            incoming.payload[:limit],  # the original bytes, cut to what Kafka accepts
            deadletter.headers(
                reason, STAGE, mqtt_topic=incoming.mqtt_topic, received_ns=str(incoming.received_ns)
            ),
            incoming.pending,
        )

    # --- the producer's delivery thread ---

    def _delivered(self, record: Record) -> None:
        """Kafka has it: count it and release its acknowledgement."""
        metrics.DELIVERED.inc()
        metrics.DELIVERED_BYTES.inc(len(record.value))
        if record.pending is not None:
            self._acks.delivered(record.pending)
