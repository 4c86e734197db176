"""The alerting loop: poll, evaluate, publish transitions, and every commit_interval_s checkpoint.

Steps, named as in the ingestion (accumulate, flush, commit):
1. evaluate: each polled record goes through the engine; each tick_interval_s the engine's
   wall-clock rules look at the clock;
2. publish: each transition goes at once to Kafka (alerting.topic, key = device, sent
   asynchronously) and MQTT (QoS 1), and is handed to InfluxDB and Alertmanager threads;
3. checkpoint (every commit_interval_s, on revocation and on stop): the state of every device that
   changed goes to alerting.state_topic, the producer is flushed, MQTT acknowledgements are awaited
   (bounded, and only while MQTT is connected: Kafka is the durable output), then the offsets are
   committed. A crash re-reads at most one interval of records on
   top of the state written with the last commit: re-processing reaches the same transitions, so a
   transition of that interval can be published twice (same fingerprint, state and time_ns).

Assignment and revocation follow the consumer group (ConsumerRebalanceListener): a revoked partition
is checkpointed and its devices dropped; an assigned one's devices are read back from the state topic
before any of its records is evaluated.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import orjson
import paho.mqtt.client as mqtt
from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from alerting import metrics
from alerting.engine import Alert, Engine, state_key
from alerting.inputs import parse_anomaly
from alerting.mqtt_acks import MqttAcks
from alerting.outputs import AlertmanagerForwarder, InfluxSink
from alerting.ruleset import RuleSet
from alerting.screen import Screen
from alerting.store import RestoreTimeout, encode, read_states
from twinpipe import eventtime
from twinpipe.clients import rebalance_listener
from twinpipe.config import Config
from twinpipe.envelope import EnvelopeError, decode
from twinpipe.health import Check, Heartbeat
from twinpipe.model import TwinModel
from twinpipe.names import PROBE_DEVICE
from twinpipe.ratelog import ThrottledLog

log = logging.getLogger("alerting")
MQTT_ACK_WAIT_S = 5.0  # at a checkpoint, the longest wait for MQTT to acknowledge transitions
UNMODELLED_LOGGED = 1000  # devices named in the log as unmodelled; beyond, one throttled line for all


class AlertStateUnavailable(Exception):
    """The state of assigned partitions could not be read back: the stage stops rather than guess."""


class Alerting:
    def __init__(
        self,
        config: Config,
        consumer: KafkaConsumer,
        producer: KafkaProducer,
        restore_consumer: Callable[[], KafkaConsumer],
        mqtt_client: mqtt.Client,
        influx: InfluxSink | None = None,
        alertmanager: AlertmanagerForwarder | None = None,
    ) -> None:
        self._config = config
        self._settings = config.alerting
        self._consumer = consumer
        self._producer = producer
        self._restore_consumer = restore_consumer
        self._mqtt = mqtt_client
        self._influx = influx
        self._alertmanager = alertmanager
        model = TwinModel(config.model)
        self.engine = Engine(RuleSet(self._settings, model))
        self.screen = Screen(model, config.ingestion)
        self._unmodelled: set[str] = set()  # devices logged as unmodelled (bounded: UNMODELLED_LOGGED)
        self._offsets: dict[TopicPartition, int] = {}
        self.mqtt_acks = MqttAcks()
        mqtt_client.on_publish = lambda _c, _u, mid, _reason, _props: self.mqtt_acks.acknowledged(mid)
        self._assigned: set[TopicPartition] = set()
        self._gauge_keys: set[tuple[str, str, str]] = set()
        self._throttled = ThrottledLog(log)
        self._fatal: str | None = None  # set by a callback: the loop stops with it
        self.heartbeat = Heartbeat(max_age_s=self._settings.restore_timeout_s + 60)

    # --- the consumer group ---

    def listener(self) -> ConsumerRebalanceListener:
        return rebalance_listener(self.revoked, self.assigned)

    def revoked(self, partitions: list[TopicPartition]) -> None:
        # Runs in the consumer's IO thread while the main thread waits in poll(): the commit must not
        # block on that thread (commit_async is sent before the group's JoinGroup on the same
        # connection). Should it fail, the new owner reads some records again, and the state
        # flushed here, being newer than them, ignores them.
        self.checkpoint(wait=False)
        for tp in partitions:
            if self._alertmanager is not None:  # the new owner sends them from now on
                self._alertmanager.forget(self.engine.fingerprints((tp.topic, tp.partition)))
            self.engine.drop((tp.topic, tp.partition))
            self._offsets.pop(tp, None)
            self._assigned.discard(tp)
        log.info("partitions revoked: %s", _names(partitions))

    def assigned(self, partitions: list[TopicPartition]) -> None:
        started = time.monotonic()
        try:
            documents, read = read_states(
                self._restore_consumer,
                self._producer,
                self._settings.state_topic,
                sorted({tp.partition for tp in partitions}),
                self._settings.restore_timeout_s,
                self._settings.group_id,
            )
        except (RestoreTimeout, KafkaError) as exc:
            # Evaluating without the state would forget pending alerts and re-fire firing ones.
            self._fatal = f"cannot read the alert state back: {exc}"
            log.error("%s; stopping", self._fatal)
            return
        now = time.time_ns()
        restored = 0
        for tp in partitions:
            found = documents.get((tp.topic, tp.partition), {})
            restored += len(found)
            latest = now + self.screen.max_future_ns
            for alert in self.engine.load((tp.topic, tp.partition), found, now, latest):
                if self._alertmanager is not None:
                    self._alertmanager.put(alert.event)
            self._assigned.add(tp)
        metrics.RESTORED.inc(restored)
        log.info(
            "partitions assigned: %s; %d device states read back (%d records) in %.2f s",
            _names(partitions),
            restored,
            read,
            time.monotonic() - started,
        )

    # --- the loop ---

    def run(self, stop: threading.Event) -> None:
        settings = self._settings
        next_tick = next_checkpoint = next_gauges = time.monotonic()
        while not stop.is_set():
            self.heartbeat.beat()
            polled = self._consumer.poll(timeout_ms=int(settings.tick_interval_s * 1000))
            if self._fatal is not None:
                raise AlertStateUnavailable(self._fatal)
            arrival = time.time_ns()
            alerts: list[Alert] = []
            for tp, records in polled.items():
                for record in records:
                    alerts += self._evaluate(tp, record, arrival)
                self._offsets[tp] = records[-1].offset + 1
            now = time.monotonic()
            if now >= next_tick:
                alerts += self.engine.tick(time.time_ns())
                next_tick = now + settings.tick_interval_s
            self.publish(alerts)
            if now >= next_checkpoint:
                self.checkpoint()
                next_checkpoint = now + settings.commit_interval_s
            if now >= next_gauges:
                self._gauges()
                next_gauges = now + 1.0
        self.checkpoint()

    def _evaluate(self, tp: TopicPartition, record: ConsumerRecord, arrival_ns: int) -> list[Alert]:
        source = (tp.topic, tp.partition)
        if tp.topic == self._settings.anomaly_topic:
            try:
                event = parse_anomaly(record.value)
            except ValueError as exc:
                metrics.SKIPPED.labels("invalid").inc()
                self._throttled.warning(
                    "anomaly", "%s[%d]@%d: not an anomaly event: %s", *source, record.offset, exc
                )
                return []
            metrics.ANOMALIES.inc()
            return self.engine.anomaly(source, event.device, event.value_name, event.value, arrival_ns)
        try:
            envelope = decode(record.value)
        except EnvelopeError:
            metrics.SKIPPED.labels("invalid").inc()  # the ingestion dead-letters it with its reason
            return []
        if envelope.device == PROBE_DEVICE:
            metrics.SKIPPED.labels("probe").inc()
            return []
        # The record's Kafka timestamp, as the ingestion judges it: the same verdict on re-delivery.
        received_ns = eventtime.arrival_ns(record.timestamp, default_ns=arrival_ns)
        screened = self.screen.reading(envelope.device, envelope.values, envelope.time_ns, received_ns)
        if screened.skipped is not None:
            metrics.SKIPPED.labels(screened.skipped).inc()
            self._skipped(envelope.device, screened.skipped, screened.problem, source, record.offset)
            return []
        if screened.out_of_range:
            metrics.VALUES_SKIPPED.labels("out_of_range").inc(len(screened.out_of_range))
            self._throttled.warning(
                "range",
                "%s: values %s outside their model range, not judged",
                envelope.device,
                screened.out_of_range,
            )
        metrics.READINGS.inc()
        return self.engine.reading(source, envelope.device, screened.values, envelope.time_ns, arrival_ns)

    def _skipped(self, device: str, reason: str, problem: str, source: tuple[str, int], offset: int) -> None:
        if reason != "unmodelled":
            self._throttled.warning(reason, "%s[%d]@%d skipped: %s", *source, offset, problem)
        elif device not in self._unmodelled and len(self._unmodelled) < UNMODELLED_LOGGED:
            self._unmodelled.add(device)
            log.warning("%s: no rule applies (counted as unmodelled; add it to model.things)", problem)
        elif device not in self._unmodelled:
            self._throttled.warning("unmodelled", "%s: no rule applies (and more devices)", problem)

    def publish(self, alerts: list[Alert]) -> None:
        settings = self._settings
        for alert in alerts:
            event = alert.event
            payload = orjson.dumps(event)
            device = alert.device
            self._producer.send(settings.topic, key=device.encode(), value=payload)
            topic = settings.mqtt_topic_template.replace("{device}", device)
            # Connected or not, paho queues a QoS 1 message (up to alerting.max_queued_mqtt) and
            # sends it once connected again.
            if not self.mqtt_acks.sent(self._mqtt.publish(topic, payload, qos=1)):
                metrics.MQTT_DROPPED.inc()
                self._throttled.warning(
                    "mqtt", "MQTT queue full (alerting.max_queued_mqtt): transitions dropped (Kafka has them)"
                )
            if event["clock"] == "event_time":
                metrics.DELAY.observe(max(0.0, (time.time_ns() - event["time_ns"]) / 1e9))
            metrics.TRANSITIONS.labels(event["state"]).inc()
            if self._influx is not None:
                self._influx.put(event)
            if self._alertmanager is not None:
                self._alertmanager.put(event)
            log.debug(
                "%s %s %s value=%s threshold=%s",
                event["rule"],
                event["state"],
                event["datastream"],
                event["value"],
                event["threshold"],
            )

    def checkpoint(self, wait: bool = True) -> None:
        """Snapshots of changed devices → state topic, flush, wait for MQTT, commit offsets
        (`wait`: synchronously; else asynchronously, failures logged, and MQTT is not waited for).

        Kafka (alerting.topic, flushed here) and the state topic are the durable outputs: offsets are
        committed once they have the transitions. MQTT is waited for (at most MQTT_ACK_WAIT_S) only
        while connected; while it is down its transitions stay queued in the client and go out on
        reconnection, and a crash in between loses them on MQTT only (counted as unacknowledged)."""
        group = self._settings.group_id
        for (topic, partition), device, document in self.engine.snapshots():
            self._producer.send(
                self._settings.state_topic,
                key=state_key(group, topic, device).encode(),
                value=encode({**document, "group": group}),
                partition=partition,
            )
        self._producer.flush(timeout=60)
        connected = self._mqtt.is_connected()
        unacked = self.mqtt_acks.wait(MQTT_ACK_WAIT_S if wait and connected else 0.0)
        if unacked:
            metrics.MQTT_UNACKED.inc(unacked)
            if not connected:
                self._throttled.warning(
                    "mqtt-down",
                    "MQTT not connected: %d transitions queued, sent when it is back",
                    self.mqtt_acks.outstanding,
                )
        offsets = {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in self._offsets.items()}
        if not offsets:
            return
        self._offsets = {}
        if not wait:
            self._consumer.commit_async(offsets, callback=_commit_done)
            return
        try:
            self._consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            _commit_done(offsets, exc)

    def _gauges(self) -> None:
        counts: dict[tuple[str, str, str], int] = {}
        for rule_id, rule, state in self.engine.active():
            key = (rule_id, rule.severity, state)
            counts[key] = counts.get(key, 0) + 1
        for key in self._gauge_keys - set(counts):
            metrics.ALERTS.labels(*key).set(0)
        for key, count in counts.items():
            metrics.ALERTS.labels(*key).set(count)
        self._gauge_keys |= set(counts)

    def ready_checks(self) -> dict[str, Check]:
        return {
            "kafka": lambda: bool(self._assigned) or "no partitions assigned (yet)",
        }


def _commit_done(_offsets: dict, response: object) -> None:
    if isinstance(response, Exception):
        metrics.COMMIT_FAILURES.inc()
        log.warning("offset commit failed (%s); the records since are read again", response)


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions)) or "none"
