"""Which transitions MQTT has acknowledged (QoS 1 PUBACK), without ever raising while it is down.

paho-mqtt keeps a QoS 1 message published while the client is disconnected in its outgoing queue
(bounded by `max_queued_messages_set`, i.e. alerting.max_queued_mqtt) and sends it after it
reconnects, but that message's `MQTTMessageInfo` keeps `rc = MQTT_ERR_NO_CONN`, so its
`is_published()` and `wait_for_publish()` raise RuntimeError even once it has been delivered. This
tracker therefore follows message ids through `on_publish` (called on PUBACK) instead.

Thread-safe: `sent` runs in the stage's loop, `acknowledged` in paho's network thread.
"""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt


class MqttAcks:
    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._outstanding: set[int] = set()  # mids queued in paho, not acknowledged yet
        self._early: set[int] = set()  # acknowledged before `sent` saw them (paho's thread was faster)
        self._since_checkpoint: list[int] = []

    def sent(self, info: mqtt.MQTTMessageInfo) -> bool:
        """Track a publish's result; False when paho did not queue it (its queue is full)."""
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            return False
        with self._lock:
            if info.mid in self._early:  # the PUBACK came before publish() returned to us
                self._early.discard(info.mid)
            else:
                self._outstanding.add(info.mid)
                self._since_checkpoint.append(info.mid)
        return True

    def acknowledged(self, mid: int) -> None:
        """paho's on_publish: the broker acknowledged message `mid`."""
        with self._lock:
            if mid in self._outstanding:
                self._outstanding.discard(mid)
                self._lock.notify_all()
            else:
                self._early.add(mid)

    @property
    def outstanding(self) -> int:
        with self._lock:
            return len(self._outstanding)

    def wait(self, timeout_s: float) -> int:
        """Wait at most `timeout_s` for the transitions sent since the last call to be acknowledged;
        how many were not (they stay queued in paho and go out when MQTT is back)."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            mine = self._since_checkpoint
            self._since_checkpoint = []
            while True:
                left = sum(1 for mid in mine if mid in self._outstanding)
                remaining = deadline - time.monotonic()
                if left == 0 or remaining <= 0:
                    return left
                self._lock.wait(remaining)
