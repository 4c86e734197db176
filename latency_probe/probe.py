"""The latency probe: reads the telemetry stream to time every hop (passive), and injects probe
readings to time the whole way to a visible InfluxDB point (active).

Threads: the main loop consumes Kafka, records hop delays, notes probes arriving and writes the
periodic summaries; the probing thread publishes probes and looks for them in InfluxDB.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError

from latency_probe import metrics
from latency_probe.prober import ProbeBook
from latency_probe.recorder import HopRecorder, summary_lines
from twinpipe.clients import mqtt_client
from twinpipe.config import Config
from twinpipe.envelope import PROBE_DEVICE, EnvelopeError, decode, encode, new_boot_id
from twinpipe.health import Check, Heartbeat
from twinpipe.influx import InfluxQL, Rejected, Unavailable
from twinpipe.metrics import consumer_lag
from twinpipe.ratelog import ThrottledLog

log = logging.getLogger("latency_probe")

LAG_INTERVAL_S = 1.0
COMMIT_INTERVAL_S = 5.0


class LatencyProbe:
    def __init__(
        self,
        config: Config,
        consumer: KafkaConsumer,
        write: Callable[[list[str]], None],
        influxql: InfluxQL,
    ) -> None:
        self._config = config
        self._settings = settings = config.latency_probe
        self._consumer = consumer
        self._write = write
        self._influxql = influxql
        self.recorder = HopRecorder(settings.device_labels, settings.max_plausible_delay_s)
        self.book = ProbeBook(new_boot_id(), settings.probe_timeout_s)
        self._throttled = ThrottledLog(log)
        self.heartbeat = Heartbeat(max_age_s=60)
        self._probing = settings.probe_interval_s > 0
        self._stop_probing = threading.Event()
        self._reading = threading.Event()  # set once the consumer has partitions to read
        self._prober = threading.Thread(target=self._probe_loop, name="prober", daemon=True)
        self._connected = threading.Event()
        self._client = mqtt_client(config.mqtt, f"twinpipe-latency-probe-{self.book.boot[-6:]}")
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = lambda *_args: self._connected.clear()
        metrics.MQTT_CONNECTED.set_function(self._connected.is_set)

    def health_checks(self) -> dict[str, Check]:
        checks = {"consumer": self.heartbeat.alive}
        if self._probing:
            checks["prober"] = self._prober.is_alive
        return checks

    def ready_checks(self) -> dict[str, Check]:
        checks = {"kafka": lambda: bool(self._consumer.assignment())}
        if self._probing:
            checks["mqtt"] = self._connected.is_set
        return checks

    def __enter__(self) -> LatencyProbe:
        if self._probing:
            mqtt_config = self._config.mqtt
            self._client.connect_async(mqtt_config.host, mqtt_config.port, mqtt_config.keepalive_s)
            self._client.loop_start()
            self._prober.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop_probing.set()
        if self._probing:
            self._prober.join(timeout=self._config.influxdb.timeout_s + 1)
            self._client.disconnect()
            self._client.loop_stop()

    # --- passive: the main loop ---

    def run(self, stop: threading.Event) -> None:
        settings = self._settings
        now = time.monotonic()
        next_summary, next_lag, next_commit = now + settings.summary_interval_s, now, now + COMMIT_INTERVAL_S
        while not stop.is_set():
            self.heartbeat.beat()
            polled = self._consumer.poll(timeout_ms=100)
            now_ns = time.time_ns()
            for record in itertools.chain.from_iterable(polled.values()):
                self.handle(record, now_ns)
            if not self._reading.is_set() and self._consumer.assignment():
                self._reading.set()
            now = time.monotonic()
            if now >= next_lag:
                self._update_lag()
                next_lag = now + LAG_INTERVAL_S
            if settings.summary_interval_s and now >= next_summary:
                self.write_summaries(time.time_ns())
                next_summary = now + settings.summary_interval_s
            if now >= next_commit:
                self._commit()
                next_commit = now + COMMIT_INTERVAL_S
        self._commit()

    def handle(self, record: ConsumerRecord, now_ns: int) -> None:
        metrics.RECORDS.inc()
        try:
            envelope = decode(record.value or b"")
        except EnvelopeError:
            metrics.INVALID.inc()
            return
        if self.book.is_mine(envelope):
            for delay in self.book.seen("kafka", [envelope.seq], now_ns):
                self._probe_arrived("kafka", delay)
        elif envelope.origin is not None:  # a replay's event times are the recording's, not a latency
            metrics.REPLAYED.inc()
        elif envelope.device != PROBE_DEVICE:  # another probe instance's readings are its business
            self.recorder.record(envelope, record.timestamp, now_ns)

    def write_summaries(self, now_ns: int) -> None:
        lines = summary_lines(self._settings.summary_measurement, self.recorder.take_windows(), now_ns)
        if not lines:
            return
        try:
            self._write(lines)
        except (Unavailable, Rejected) as exc:
            metrics.ERRORS.labels("summary_write").inc()
            self._throttled.warning("summary", "cannot write latency summaries to InfluxDB: %s", exc)

    def _update_lag(self) -> None:
        positions = {tp: self._consumer.position(tp) for tp in self._consumer.assignment()}
        lag = consumer_lag(self._consumer, positions)
        if lag is not None:
            metrics.LAG.set(lag)

    def _commit(self) -> None:
        """Positions are committed so a restart does not re-read (and mis-time) old records."""
        try:
            self._consumer.commit()
        except KafkaError as exc:
            self._throttled.warning("commit", "offset commit failed: %s", exc)

    # --- active: the probing thread ---

    def _probe_loop(self) -> None:
        """Probes start once the consumer reads, so the first ones do not time the group join."""
        settings = self._settings
        while not self._reading.wait(0.5):
            if self._stop_probing.is_set():
                return
        next_probe = time.monotonic()
        while not self._stop_probing.wait(settings.influx_poll_interval_s):
            if time.monotonic() >= next_probe:
                self._send_probe()
                next_probe += settings.probe_interval_s
            self._look_in_influx()
            for stage, seqs in self.book.expire(time.time_ns()).items():
                if seqs:
                    metrics.PROBES_LOST.labels(stage).inc(len(seqs))
                    log.warning(
                        "probe(s) %s not seen in %s within %.0f s: counted lost",
                        seqs,
                        stage,
                        settings.probe_timeout_s,
                    )

    def _send_probe(self) -> None:
        envelope = self.book.new_probe(time.time_ns())
        topic = self._config.publisher.topic_template.format(device=PROBE_DEVICE)
        info = self._client.publish(topic, encode(envelope), qos=1)
        metrics.PROBES_SENT.inc()
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            metrics.ERRORS.labels("publish").inc()
            self._throttled.warning("publish", "cannot publish probe: %s", mqtt.error_string(info.rc))

    def _look_in_influx(self) -> None:
        oldest = self.book.oldest_pending("influxdb")
        if oldest is None:
            return
        query = (
            f'SELECT "seq" FROM "{self._config.ingestion.measurement}" '
            f"WHERE \"device\" = '{PROBE_DEVICE}' AND \"boot\" = '{self.book.boot}' AND time >= {oldest}"
        )
        try:
            rows = self._influxql.rows(query)
        except Unavailable as exc:
            metrics.ERRORS.labels("influx_query").inc()
            self._throttled.warning("query", "cannot look for probes in InfluxDB: %s", exc)
            return
        for delay in self.book.seen("influxdb", [row["seq"] for row in rows], time.time_ns()):
            self._probe_arrived("influxdb", delay)

    def _probe_arrived(self, stage: str, delay_s: float) -> None:
        metrics.PROBE_DELAY.labels(stage).observe(delay_s)
        self.recorder.add_sample(f"probe_to_{stage}", delay_s)

    def _on_connect(self, _client: mqtt.Client, _userdata: object, _flags: object, reason, _props) -> None:
        if reason.is_failure:
            log.error("MQTT broker refused the connection: %s", reason)
        else:
            self._connected.set()
            log.info("connected to MQTT broker %s:%d", self._config.mqtt.host, self._config.mqtt.port)
