"""The publisher's MQTT session for commands: subscribed to its boards' command topics, persistent.

A client of its own (not the telemetry client, whose id changes on every start by default): a
stable `publisher.commands.client_id`, `clean_start` false and `session_expiry_s`, so commands the
bridge sends while the publisher is away wait in the broker and arrive when it returns. QoS 1 with
manual acknowledgement (the runner acknowledges after the outcome event), Receive Maximum =
`max_waiting`. Events go to the command's MQTT 5 Response Topic (else `events_topic_template`),
QoS 1, with the command id as Correlation Data. TCP_NODELAY on its socket: paho leaves Nagle's
algorithm on, which held the second of two events sent back to back for the broker's delayed ACK.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from publisher import metrics
from publisher.commands import CommandRunner
from twinpipe.clients import connect_properties, mqtt_client
from twinpipe.command_messages import CommandError, CommandEvent, decode_command, encode_event
from twinpipe.config import Config
from twinpipe.ratelog import ThrottledLog

log = logging.getLogger("publisher.commands")


class CommandChannel:
    def __init__(self, config: Config, devices: list[str], client_id: str) -> None:
        self._config = config
        self._settings = config.publisher.commands
        self._topics = {self._settings.topic_template.format(device=device): device for device in devices}
        self._client = mqtt_client(config.mqtt, client_id, manual_ack=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._generation = 0  # connection count: a message id is only valid on its own connection
        self._lock = threading.Lock()
        self.subscribed = threading.Event()
        self._throttled = ThrottledLog(log)
        self.runner: CommandRunner | None = None  # set before connect()

    def connect(self) -> None:
        mqtt_config = self._config.mqtt
        self._client.connect_async(
            mqtt_config.host,
            mqtt_config.port,
            mqtt_config.keepalive_s,
            clean_start=False,
            properties=connect_properties(self._settings.session_expiry_s, self._settings.max_waiting),
        )
        self._client.loop_start()

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def emit(self, event: CommandEvent, topic: str) -> None:
        """Hand an event to the client (QoS 1; paho keeps it for re-sending while disconnected)."""
        properties = Properties(PacketTypes.PUBLISH)
        properties.CorrelationData = event.id.encode()
        self._client.publish(topic, encode_event(event), qos=1, properties=properties)

    def ack(self, token: tuple[int, int]) -> None:
        generation, mid = token
        with self._lock:
            if generation != self._generation:
                return  # that connection is gone: the broker redelivers the message on this one
        self._client.ack(mid, 1)

    def _on_connect(self, client: mqtt.Client, _userdata: Any, flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            log.error("MQTT broker refused the command session: %s", reason)
            return
        with self._lock:
            self._generation += 1
        sock = client.socket()
        if sock is not None:  # events go out at once, not after the broker's delayed TCP ACK (Nagle)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        log.info(
            "command session %s connected (%s)",
            client._client_id.decode(),
            "resumed" if flags.session_present else "new",
        )
        client.subscribe([(topic, SubscribeOptions(qos=1)) for topic in self._topics])

    def _on_subscribe(
        self, _client: mqtt.Client, _userdata: Any, _mid: int, reasons: list, _props: Any
    ) -> None:
        refused = [reason for reason in reasons if reason.is_failure]
        if refused:
            log.error("MQTT broker refused %d command subscription(s): %s", len(refused), refused[0])
        else:
            log.info("subscribed to %d command topic(s)", len(self._topics))
            self.subscribed.set()

    def _on_disconnect(self, *_args: Any) -> None:
        self.subscribed.clear()

    def _on_message(self, client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        token = (self._generation, message.mid)
        device = self._topics.get(message.topic)
        try:
            command = decode_command(message.payload)
            if device is not None and command.device != device:
                raise CommandError(f"device {command.device!r} differs from the topic's device {device!r}")
        except CommandError as exc:
            metrics.COMMANDS_INVALID.inc()
            self._throttled.warning("invalid", "dropped an invalid command on %s: %s", message.topic, exc)
            self.ack(token)
            return
        reply = getattr(
            message.properties, "ResponseTopic", None
        ) or self._settings.events_topic_template.format(device=command.device)
        assert self.runner is not None
        self.runner.submit(command, reply, token)
