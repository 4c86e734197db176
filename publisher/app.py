"""The publisher: a source thread fills a bounded buffer, the main thread sends it to MQTT at QoS 1.

The source never waits for the network. At most `max_inflight` messages are handed to the MQTT
client and not yet acknowledged; everything else waits in the buffer, whose overflow is counted and
logged. What is in flight, what must be re-sent after a reconnect, the window of acknowledged
readings kept against a broker crash and the readings set aside are the `Outbox`'s
(publisher/outbox.py); this module feeds it paho's events. With `spool_dir` set, every reading is
also spooled to disk until it left that window, so a killed publisher's successor sends it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt

from publisher import metrics
from publisher.buffer import DropOldestBuffer
from publisher.command_channel import CommandChannel
from publisher.command_codec import make_codec
from publisher.commands import CommandRunner
from publisher.framing import FrameError
from publisher.outbox import Outbox, Pending, describe, drain, publish_packet_size
from publisher.replay import ReplaySource, RowError
from publisher.sequencer import Sequencer
from publisher.sources import SerialSource, SimulatorSource
from publisher.spool import FLUSH_INTERVAL_S as SPOOL_FLUSH_INTERVAL_S
from publisher.spool import Spool
from twinpipe.clients import mqtt_client
from twinpipe.config import Config, simulated_device_ids
from twinpipe.envelope import ORIGIN_REPLAY, TRACE_PUBLISH, encode, new_boot_id
from twinpipe.health import Check, Heartbeat
from twinpipe.metrics import sample
from twinpipe.model import TwinModel
from twinpipe.ratelog import ThrottledLog
from twinpipe.takeover import SessionGuard

log = logging.getLogger("publisher")


class Publisher:
    def __init__(self, config: Config) -> None:
        self._config = config
        settings = config.publisher
        self.boot = new_boot_id()
        # Each reading with its spool segment (None without a spool), which is told when it is done.
        self.buffer: DropOldestBuffer[Pending] = DropOldestBuffer(settings.buffer_size)
        self._sequencers: dict[str, Sequencer] = {}
        self._spool = Spool(settings.spool_dir) if settings.spool_dir else None
        self._outbox = Outbox(
            settings.max_inflight,
            settings.resend_window_s,
            window_max=settings.buffer_size,
            set_aside=self._set_aside,
            finished=self._finish,
        )
        self._broker_max_packet: int | None = None  # MQTT 5 CONNACK Maximum Packet Size
        self._lost: tuple[str, int | None] = ("", None)  # why the last connection ended (see _on_disconnect)
        self._throttled = ThrottledLog(log)
        name = {
            "serial": settings.serial.device_id,
            "simulator": settings.simulator.device_prefix,
            "replay": settings.replay.device,
        }[settings.source]
        client_id = settings.client_id or f"twinpipe-publisher-{name}-{self.boot[-6:]}"
        self._client = mqtt_client(config.mqtt, client_id)
        self._client.max_inflight_messages_set(0)  # the Outbox keeps max_inflight; paho must not queue
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
        self._model = TwinModel(config.model)
        # Serial frames are range-checked by the decoder (with their raw bytes in the log); readings
        # of other sources, and json/kv keys taken without a fields list, here in accept().
        self._check_ranges = settings.source != "serial" or not settings.serial.frame.fields
        commands = settings.commands.enabled and settings.source != "replay"
        codec = make_codec(settings.commands) if commands else None
        on_ack = self._on_command_ack if commands else None
        if settings.source == "serial":
            serial_ranges = self._model.ranges(settings.serial.device_id, settings.serial.frame.fields)
            self._source: SerialSource | SimulatorSource = SerialSource(
                settings.serial,
                self.accept,
                self._on_frame_error,
                serial_ranges,
                (codec.extractor, self._on_command_ack) if codec else None,
                self._on_board_replugged,
            )
        elif settings.source == "replay":
            self._source = self._replay = ReplaySource(
                settings.replay, self.accept_replayed, self._on_skipped_row
            )
        else:
            self._source = SimulatorSource(settings.simulator, self.accept, on_ack)
        self._commands: CommandChannel | None = None
        if codec is not None:
            devices = (
                [settings.serial.device_id]
                if settings.source == "serial"
                else simulated_device_ids(settings.simulator)
            )
            self._commands = CommandChannel(
                config, devices, settings.commands.client_id or f"twinpipe-commands-{name}"
            )
            self._commands.runner = CommandRunner(
                settings.commands, codec, self._source.write, self._commands.emit, self._commands.ack
            )
        elif settings.commands.enabled:
            log.info("publisher.commands: a replay takes no commands")
        if settings.source != "replay":
            self._replay = None
        self.failed = False  # the source ended on an error (a replay's): exit status 1
        self._stop = threading.Event()
        self._source_thread = threading.Thread(
            target=self._source.run, args=(self._stop,), name="source", daemon=True
        )
        self._sender_heartbeat = Heartbeat(max_age_s=30)
        self._connected = threading.Event()
        metrics.BUFFER_CAPACITY.set(settings.buffer_size)
        metrics.BUFFER_DEPTH.set_function(lambda: len(self.buffer))
        metrics.INFLIGHT.set_function(self._outbox.inflight)
        metrics.RESEND_WINDOW.set_function(self._outbox.window)
        metrics.MQTT_CONNECTED.set_function(self._connected.is_set)
        if self._spool:
            for envelope, segment in self._spool.recover():
                self._buffer_put(Pending(envelope, segment))

    def health_checks(self) -> dict[str, Check]:
        return {"source": self._source_alive, "sender": self._sender_heartbeat.alive}

    def _source_alive(self) -> bool:
        """A replay that reached its end finished normally: healthy until the publisher exits."""
        return self._source_thread.is_alive() or (self._replay is not None and self._replay.finished.is_set())

    def ready_checks(self) -> dict[str, Check]:
        checks = {"mqtt": self._connected.is_set, "session": self._session.ready}
        if self._commands is not None:
            checks["commands"] = self._commands.subscribed.is_set
        return checks

    def __enter__(self) -> Publisher:
        mqtt_config = self._config.mqtt
        self._client.connect_async(mqtt_config.host, mqtt_config.port, mqtt_config.keepalive_s)
        self._client.loop_start()
        if self._commands is not None:
            self._commands.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._commands is not None:
            self._commands.close()
        self._client.disconnect()
        self._client.loop_stop()
        log.info(
            "stopped: %d readings, %d published, %d dropped on overflow, %d rejected, %d set aside, "
            "%d re-sent after a lost connection (%d left the re-send window early: buffer_size), "
            "%d left in the buffer",
            sample("twinpipe_publisher_readings_total"),
            sample("twinpipe_publisher_messages_published_total"),
            self.buffer.dropped,
            sample("twinpipe_publisher_errors_total", kind="publish")
            + sample("twinpipe_publisher_errors_total", kind="broker"),
            sum(
                sample("twinpipe_publisher_readings_set_aside_total", kind=k) for k in metrics.SET_ASIDE_KINDS
            ),
            sample("twinpipe_publisher_readings_resent_total"),
            self._outbox.window_evicted,
            len(self.buffer),
        )

    # --- source side (source thread) ---

    def accept(self, device: str, values: dict[str, float], read_ns: int) -> None:
        if self._check_ranges and (outside := self._outside_range(device, values)):
            self._out_of_range(device, outside, values[outside])
            return
        sequencer = self._sequencers.get(device)
        if sequencer is None:
            sequencer = self._sequencers[device] = Sequencer(device, self.boot)
        metrics.READINGS.inc()
        envelope = sequencer.stamp(values, read_ns)
        self._buffer_put(Pending(envelope, self._spool.append(envelope) if self._spool else None))

    def _on_board_replugged(self, device: str) -> None:
        """A serial port lost and opened again: taken as a board restart, since a replugged USB-powered
        board resets and forgets its settings. The device's readings get a new boot id and seq from 0,
        by which the twin_state stage sees the restart and sends the settings again. A port lost
        without a reset (a USB glitch) is taken the same way: re-sending settings is harmless, missing a
        restart is not."""
        boot = new_boot_id()
        sequencer = self._sequencers.get(device)
        if sequencer is None:
            self._sequencers[device] = Sequencer(device, boot)
        else:
            sequencer.restart(boot)
        log.info("%s is back: taken as a restarted board, its readings now carry boot %s", device, boot)

    def _outside_range(self, device: str, values: dict[str, float]) -> str | None:
        """The first value name whose value lies outside its datastream's range, or None."""
        outside = self._model.outside_ranges(device, values)
        return outside[0] if outside else None

    def _out_of_range(self, device: str, name: str, value: float) -> None:
        metrics.OUT_OF_RANGE.labels(name).inc()
        self._throttled.warning(
            f"range-{name}",
            "dropped a reading of %s: %s = %g is outside its plausible range %s (model:); %d so far",
            device,
            name,
            value,
            list(self._model.datastream(device, name).range),  # type: ignore[union-attr]
            sample("twinpipe_publisher_out_of_range_total", datastream=name),
        )

    def accept_replayed(self, device: str, values: dict[str, float], time_ns: int) -> bool:
        """A replayed row: marked origin=replay, and never dropped: waits while the buffer is full.
        False when the publisher is stopping (the row was not taken)."""
        sequencer = self._sequencers.get(device)
        if sequencer is None:
            sequencer = self._sequencers[device] = Sequencer(device, self.boot)
        if outside := self._outside_range(device, values):  # the model's plausible ranges, as live
            self._out_of_range(device, outside, values[outside])
            return True  # handled: dropped and counted like a live reading out of range
        envelope = sequencer.stamp(values, time_ns, ORIGIN_REPLAY)
        pending = Pending(envelope, self._spool.append(envelope) if self._spool else None)
        if not self.buffer.put_waiting(pending, self._stop):
            return False  # stopping; with a spool, the next start sends it
        metrics.READINGS.inc()
        return True

    def _on_skipped_row(self, error: RowError) -> None:
        metrics.REPLAY_SKIPPED.labels(error.kind).inc()
        self._throttled.warning(
            f"replay-{error.kind}",
            "replay: skipped line %d of %s (%s): %s; %d %s so far",
            error.line,
            self._config.publisher.replay.path,
            error.kind,
            error.reason,
            sample("twinpipe_publisher_replay_rows_skipped_total", kind=error.kind),
            error.kind,
        )

    def _buffer_put(self, item: Pending) -> None:
        dropped = self.buffer.put(item)
        if dropped is not None:
            evicted = dropped.envelope
            self._finish(dropped)
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
        if error.value is not None:
            metrics.OUT_OF_RANGE.labels(error.value).inc()
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

    def _on_command_ack(self, device: str, line: str) -> None:
        if self._commands is not None and self._commands.runner is not None:
            self._commands.runner.on_ack(device, line)

    def run(self, stop: threading.Event) -> None:
        self._source_thread.start()
        if self._commands is not None and self._commands.runner is not None:
            threading.Thread(
                target=self._commands.runner.run, args=(self._stop,), name="commands", daemon=True
            ).start()
        # With a spool, wake at least every flush interval, also while the broker is away.
        wait_s = SPOOL_FLUSH_INTERVAL_S if self._spool else 0.2
        while not stop.is_set():
            self._sender_heartbeat.beat()
            if not self._send_one(timeout=wait_s) and (self._replay_delivered() or self._replay_failed()):
                break
        self._stop.set()
        self._source_thread.join(timeout=5)
        self._drain(time.monotonic() + self._config.publisher.shutdown_timeout_s)
        if self._replay is not None:
            out_of_range = sum(
                point.value
                for metric in metrics.OUT_OF_RANGE.collect()
                for point in metric.samples
                if point.name.endswith("_total")
            )
            log.info(
                "%s; %d outside the model's plausible ranges (dropped); %d acknowledged by the broker",
                self._replay.summary(),
                out_of_range,
                sample("twinpipe_publisher_messages_published_total"),
            )

    def _replay_failed(self) -> bool:
        """The replay's thread died of an error (logged by threading's excepthook): a replay is a job
        with an end, so the publisher delivers what it has and exits 1 rather than idle unhealthy."""
        if self._replay is None or self._source_thread.is_alive() or self._replay.finished.is_set():
            return False
        if not self.failed:
            self.failed = True
            log.error("the replay stopped on an error (above); delivering what is buffered, then exiting 1")
        return not len(self.buffer) and not self._outbox.inflight() and not self._outbox.waiting()

    def _replay_delivered(self) -> bool:
        """The replay reached its end and everything it handed over was acknowledged: time to exit."""
        return (
            self._replay is not None
            and self._replay.finished.is_set()
            and not len(self.buffer)
            and not self._outbox.inflight()
            and not self._outbox.waiting()
        )

    def _send_one(self, timeout: float) -> bool:
        if self._spool:
            self._spool.flush_due()
        if self._connected.is_set():
            self._outbox.expire()
        pending = self._outbox.take()
        if pending is False:
            self._outbox.wait(timeout)
            return False
        if pending is None:
            pending = self.buffer.get(timeout)
            if pending is None:
                return False
        envelope = pending.envelope
        envelope.trace[TRACE_PUBLISH] = time.time_ns()
        topic = self._config.publisher.topic_template.format(device=envelope.device)
        payload = encode(envelope)
        too_large = self._too_large(topic, payload, pending)
        if too_large:
            self._set_aside(pending, "too_large", too_large)
            return True
        metrics.PUBLISHED_BYTES.inc(len(payload))
        info = self._client.publish(topic, payload, qos=1)
        # NO_CONN means queued by the client; the Outbox takes it back and re-sends it on connect.
        if info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            self._outbox.sent(info.mid, pending, on_connection=info.rc == mqtt.MQTT_ERR_SUCCESS)
        else:
            self._finish(pending)
            metrics.ERRORS.labels("publish").inc()
            log.error(
                "cannot publish %s seq %d to %s: %s",
                envelope.device,
                envelope.seq,
                topic,
                mqtt.error_string(info.rc),
            )
        return True

    def _too_large(self, topic: str, payload: bytes, pending: Pending) -> str | None:
        """Why this PUBLISH can never be delivered, or None: over publisher.max_payload_bytes, or over
        the Maximum Packet Size the broker announced in CONNACK."""
        limit = self._config.publisher.max_payload_bytes
        if len(payload) > limit:
            return f"payload of {len(payload)} bytes exceeds publisher.max_payload_bytes ({limit})"
        pending.packet_bytes = publish_packet_size(topic.encode(), len(payload))
        broker_max = self._broker_max_packet
        if broker_max is not None and pending.packet_bytes > broker_max:
            return (
                f"PUBLISH of {pending.packet_bytes} bytes exceeds the broker's Maximum Packet Size "
                f"({broker_max} bytes, from its CONNACK)"
            )
        return None

    def _set_aside(self, pending: Pending, kind: str, reason: str) -> None:
        """A reading the broker will never take: counted, logged with its device and seq, kept in
        the spool's rejected/ file when there is a spool, and out of the way of those behind it."""
        envelope = pending.envelope
        metrics.SET_ASIDE.labels(kind).inc()
        if self._spool:
            where = self._spool.set_aside(envelope, kind, reason)
        else:
            where = "not kept (no publisher.spool_dir)"
        log.warning(
            "set aside %s seq %d (boot %s, %d values): %s; %s",
            envelope.device,
            envelope.seq,
            envelope.boot,
            len(envelope.values),
            reason,
            where,
        )
        self._finish(pending)

    def _finish(self, pending: Pending) -> None:
        """A reading is done (past the re-send window, or given up and counted): its spool entry can go."""
        if self._spool and pending.segment is not None:
            self._spool.done(pending.segment)

    def _drain(self, deadline: float) -> None:
        """On shutdown: send what is buffered or queued for a re-send and wait for its acknowledgements,
        until the deadline; then name every reading not delivered, which the spool keeps."""
        try:
            self._drain_outbox(deadline)
        finally:
            if self._spool:
                self._spool.flush()  # what was not delivered is sent by the next start

    def _drain_outbox(self, deadline: float) -> None:
        self._session.draining()  # a stolen session is wanted back now, not after a long backoff
        if not self._connected.is_set():
            self._client.loop_stop()  # cuts a reconnect wait the takeover backoff made long ...
            self._client.loop_start()  # ... so the next attempt comes after mqtt.reconnect_min_s
        if drain(self._outbox, self.buffer.__len__, self._send_one, deadline):
            return
        pending = self._outbox.unacknowledged()
        buffered = []
        while (item := self.buffer.get(0)) is not None:
            buffered.append(item)
        resent = [p for p in pending if p.acked_before]
        never = [p for p in pending if not p.acked_before] + buffered
        log.warning(
            "shutdown timeout (publisher.shutdown_timeout_s = %.1f s; %s): %d readings not delivered. "
            "Never acknowledged (%d in flight or queued, %d buffered): %s. Acknowledged before the "
            "connection was lost, re-sent and not acknowledged again: %s. %s",
            self._config.publisher.shutdown_timeout_s,
            "connected" if self._connected.is_set() else "not connected",
            len(pending) + len(buffered),
            len(pending) - len(resent),
            len(buffered),
            describe(never),
            describe(resent),
            f"They stay in the spool ({self._config.publisher.spool_dir}) for the next start"
            if self._spool
            else "Lost: no publisher.spool_dir",
        )

    # --- paho callbacks (network thread) ---

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.error(
                "MQTT broker %s:%d refused the connection: %s",
                self._config.mqtt.host,
                self._config.mqtt.port,
                reason,
            )
        else:
            self._take_back_inflight(client, props)
            self._connected.set()
            self._session.connected()
            log.info("connected to MQTT broker %s:%d", self._config.mqtt.host, self._config.mqtt.port)

    def _take_back_inflight(self, client: mqtt.Client, props: Any) -> None:
        """Runs before paho would re-send its unacknowledged messages oldest first (which would send
        a message the broker closes the connection on again, forever: paho.mqtt.python #640): take
        them back and let the Outbox re-send them after its checks, with the acknowledged window
        when the broker was lost."""
        broker_max = getattr(props, "MaximumPacketSize", None)
        if broker_max != self._broker_max_packet and broker_max is not None:
            log.info("the broker takes packets of up to %d bytes (MQTT 5 Maximum Packet Size)", broker_max)
        self._broker_max_packet = broker_max
        # Sending more unacknowledged messages than the broker's Receive Maximum is a protocol error.
        receive_maximum = getattr(props, "ReceiveMaximum", None) or 65535
        self._outbox.max_inflight = min(self._config.publisher.max_inflight, receive_maximum)
        dropped = [message.mid for message in client.drop_out_messages()]
        lost_reason, server_reason = self._lost
        resent = self._outbox.connected(dropped, lost_reason, server_reason)
        if resent:
            metrics.RESENT.inc(resent)
            log.info(
                "re-sending the %d readings acknowledged in the last %.0f s (publisher.resend_window_s): "
                "the connection was lost (%s), and a broker that crashed may not have saved them",
                resent,
                self._config.publisher.resend_window_s,
                lost_reason,
            )

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, flags: Any, reason: Any, _props: Any
    ) -> None:
        """Remembers why the connection ended for the next connect's re-send decision (the reason
        code only when the broker said it in a DISCONNECT packet), and names a stolen session."""
        self._connected.clear()
        self._lost = (str(reason), reason.value if flags.is_disconnect_packet_from_server else None)
        taken_over = self._session.disconnected(reason, flags)  # counted, and logged once per episode
        if reason.is_failure and not taken_over:
            log.warning("disconnected from MQTT broker (%s); buffering and reconnecting", reason)

    def _on_publish(self, client: mqtt.Client, _userdata: Any, mid: int, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            metrics.ERRORS.labels("broker").inc()
        else:
            metrics.PUBLISHED.inc()
        self._outbox.acked(mid, str(reason) if reason.is_failure else None)
