"""The publisher: a source thread fills a bounded buffer, the main thread sends it to MQTT at QoS 1.

The source never waits for the network. At most `max_inflight` messages are handed to the MQTT
client and not yet acknowledged (paho keeps and resends those across reconnects); everything else
waits in the buffer, whose overflow is counted and logged. With `spool_dir` set, every reading is
also spooled to disk until the broker acknowledged it, so a killed publisher's successor sends it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt

from publisher import metrics
from publisher.buffer import DropOldestBuffer
from publisher.framing import FrameError
from publisher.sequencer import Sequencer
from publisher.sources import SerialSource, SimulatorSource
from publisher.spool import FLUSH_INTERVAL_S as SPOOL_FLUSH_INTERVAL_S
from publisher.spool import Spool
from twinpipe.clients import mqtt_client
from twinpipe.config import Config
from twinpipe.envelope import TRACE_PUBLISH, Envelope, encode, new_boot_id
from twinpipe.health import Check, Heartbeat
from twinpipe.metrics import sample
from twinpipe.ratelog import ThrottledLog
from twinpipe.takeover import SessionGuard

log = logging.getLogger("publisher")


class Publisher:
    def __init__(self, config: Config) -> None:
        self._config = config
        settings = config.publisher
        self.boot = new_boot_id()
        # Each reading with its spool segment (None without a spool), which is told when it is done.
        self.buffer: DropOldestBuffer[tuple[Envelope, int | None]] = DropOldestBuffer(settings.buffer_size)
        self._sequencers: dict[str, Sequencer] = {}
        self._unacked = 0
        self._acks = threading.Condition()
        self._spool = Spool(settings.spool_dir) if settings.spool_dir else None
        self._segment_of: dict[int, int | None] = {}  # MQTT message id → spool segment, until acked
        self._early_acks: set[int] = set()  # acknowledged before publish() returned its id
        self._throttled = ThrottledLog(log)
        name = settings.serial.device_id if settings.source == "serial" else settings.simulator.device_prefix
        client_id = settings.client_id or f"twinpipe-publisher-{name}-{self.boot[-6:]}"
        self._client = mqtt_client(config.mqtt, client_id)
        self._client.max_inflight_messages_set(settings.max_inflight)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._session = SessionGuard(
            self._client,
            client_id,
            "give each publisher its own publisher.client_id, or leave it null for one made per start",
            "publisher",
            (config.mqtt.reconnect_min_s, config.mqtt.reconnect_max_s),
        )
        if settings.source == "serial":
            self._source: SerialSource | SimulatorSource = SerialSource(
                settings.serial, self.accept, self._on_frame_error
            )
        else:
            self._source = SimulatorSource(settings.simulator, self.accept)
        self._stop = threading.Event()
        self._source_thread = threading.Thread(
            target=self._source.run, args=(self._stop,), name="source", daemon=True
        )
        self._sender_heartbeat = Heartbeat(max_age_s=30)
        self._connected = threading.Event()
        metrics.BUFFER_CAPACITY.set(settings.buffer_size)
        metrics.BUFFER_DEPTH.set_function(lambda: len(self.buffer))
        metrics.INFLIGHT.set_function(lambda: self._unacked)
        metrics.MQTT_CONNECTED.set_function(self._connected.is_set)
        if self._spool:
            for item in self._spool.recover():
                self._buffer_put(item)

    def health_checks(self) -> dict[str, Check]:
        return {"source": self._source_thread.is_alive, "sender": self._sender_heartbeat.alive}

    def ready_checks(self) -> dict[str, Check]:
        return {"mqtt": self._connected.is_set, "session": self._session.ready}

    def __enter__(self) -> Publisher:
        mqtt_config = self._config.mqtt
        self._client.connect_async(mqtt_config.host, mqtt_config.port, mqtt_config.keepalive_s)
        self._client.loop_start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        log.info(
            "stopped: %d readings, %d published, %d dropped on overflow, %d rejected, %d left in the buffer",
            sample("twinpipe_publisher_readings_total"),
            sample("twinpipe_publisher_messages_published_total"),
            self.buffer.dropped,
            sample("twinpipe_publisher_errors_total", kind="publish")
            + sample("twinpipe_publisher_errors_total", kind="broker"),
            len(self.buffer),
        )

    # --- source side (source thread) ---

    def accept(self, device: str, values: dict[str, float], read_ns: int) -> None:
        sequencer = self._sequencers.get(device)
        if sequencer is None:
            sequencer = self._sequencers[device] = Sequencer(device, self.boot)
        metrics.READINGS.inc()
        envelope = sequencer.stamp(values, read_ns)
        self._buffer_put((envelope, self._spool.append(envelope) if self._spool else None))

    def _buffer_put(self, item: tuple[Envelope, int | None]) -> None:
        dropped = self.buffer.put(item)
        if dropped is not None:
            evicted, segment = dropped
            self._finish(segment)
            metrics.DROPPED.inc()
            self._throttled.warning(
                "overflow",
                "buffer full (%d readings, MQTT unreachable or slow): dropped %s seq %d; %d dropped so far",
                self.buffer.capacity,
                evicted.device,
                evicted.seq,
                self.buffer.dropped,
            )

    def _on_frame_error(self, device: str, error: FrameError) -> None:
        metrics.ERRORS.labels("frame").inc()
        metrics.FRAME_ERRORS.labels(error.kind).inc()
        self._throttled.warning(
            f"frame-{error.kind}",
            "bad frame from %s: %s (raw %s); %d %s so far",
            device,
            error.reason,
            error.raw[:64].hex(" "),
            sample("twinpipe_publisher_frame_errors_total", kind=error.kind),
            error.kind,
        )

    # --- network side (main thread) ---

    def run(self, stop: threading.Event) -> None:
        self._source_thread.start()
        # With a spool, wake at least every flush interval, also while the broker is away.
        wait_s = SPOOL_FLUSH_INTERVAL_S if self._spool else 0.2
        while not stop.is_set():
            self._sender_heartbeat.beat()
            self._send_one(timeout=wait_s)
        self._stop.set()
        self._source_thread.join(timeout=5)
        self._drain(time.monotonic() + self._config.publisher.shutdown_timeout_s)
        if self._spool:
            self._spool.flush()  # what was not delivered is sent by the next start

    def _send_one(self, timeout: float) -> bool:
        if self._spool:
            self._spool.flush_due()
        with self._acks:
            if self._unacked >= self._config.publisher.max_inflight and not self._acks.wait(timeout):
                return False
        item = self.buffer.get(timeout)
        if item is None:
            return False
        envelope, segment = item
        envelope.trace[TRACE_PUBLISH] = time.time_ns()
        topic = self._config.publisher.topic_template.format(device=envelope.device)
        with self._acks:
            self._unacked += 1
        payload = encode(envelope)
        metrics.PUBLISHED_BYTES.inc(len(payload))
        info = self._client.publish(topic, payload, qos=1)
        # NO_CONN means queued by the client and sent after the reconnect.
        if info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            if self._spool:
                self._remember_segment(info.mid, segment)
        else:
            with self._acks:
                self._unacked -= 1
            self._finish(segment)
            metrics.ERRORS.labels("publish").inc()
            log.error(
                "cannot publish %s seq %d to %s: %s",
                envelope.device,
                envelope.seq,
                topic,
                mqtt.error_string(info.rc),
            )
        return True

    def _remember_segment(self, mid: int, segment: int | None) -> None:
        """Which spool segment to tell when message `mid` is acknowledged (the acknowledgement may
        already have come: paho's network thread can run before publish() returns)."""
        with self._acks:
            if mid in self._early_acks:
                self._early_acks.discard(mid)
                self._finish(segment)
            else:
                self._segment_of[mid] = segment

    def _finish(self, segment: int | None) -> None:
        """A reading is done (acknowledged, or given up and counted): its spool entry can go."""
        if self._spool and segment is not None:
            self._spool.done(segment)

    def _drain(self, deadline: float) -> None:
        """On shutdown: send what is buffered and wait for its acknowledgements, until the deadline."""
        while len(self.buffer) and time.monotonic() < deadline:
            self._send_one(timeout=min(0.2, max(0.0, deadline - time.monotonic())))
        with self._acks:
            while self._unacked and time.monotonic() < deadline:
                self._acks.wait(max(0.0, deadline - time.monotonic()))
            if self._unacked or len(self.buffer):
                log.warning(
                    "shutdown timeout: %d unacknowledged and %d buffered readings not delivered",
                    self._unacked,
                    len(self.buffer),
                )

    # --- paho callbacks (network thread) ---

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            log.error(
                "MQTT broker %s:%d refused the connection: %s",
                self._config.mqtt.host,
                self._config.mqtt.port,
                reason,
            )
        else:
            self._connected.set()
            self._session.connected()
            log.info("connected to MQTT broker %s:%d", self._config.mqtt.host, self._config.mqtt.port)

    def _on_disconnect(
        self, client: mqtt.Client, _userdata: Any, flags: Any, reason: Any, _props: Any
    ) -> None:
        self._connected.clear()
        taken_over = self._session.disconnected(reason, flags)  # counted, and logged once per episode
        if reason.is_failure and not taken_over:
            log.warning("disconnected from MQTT broker (%s); buffering and reconnecting", reason)

    def _on_publish(self, client: mqtt.Client, _userdata: Any, mid: int, reason: Any, _props: Any) -> None:
        with self._acks:
            self._unacked -= 1
            self._acks.notify()
            if self._spool:
                if mid in self._segment_of:
                    self._finish(self._segment_of.pop(mid))
                else:
                    self._early_acks.add(mid)
        if reason.is_failure:
            metrics.ERRORS.labels("broker").inc()
            log.error("broker rejected message %d: %s", mid, reason)
        else:
            metrics.PUBLISHED.inc()
