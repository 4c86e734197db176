"""Acknowledging MQTT messages only once Kafka holds them, in the order they arrived.

MQTT requires PUBACKs in arrival order, and acknowledging message N must never imply that an
earlier message, still on its way to Kafka, is safe. So a message is acknowledged when it and every
message before it on the same connection are delivered.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable


class Pending:
    __slots__ = ("mid", "delivered")

    def __init__(self, mid: int) -> None:
        self.mid = mid
        self.delivered = False


class InOrderAcks:
    def __init__(self, send_ack: Callable[[int], object]) -> None:
        self._send_ack = send_ack
        self._queue: deque[Pending] = deque()
        self._lock = threading.Lock()

    def received(self, mid: int) -> Pending:
        pending = Pending(mid)
        with self._lock:
            self._queue.append(pending)
        return pending

    def delivered(self, pending: Pending) -> None:
        with self._lock:
            pending.delivered = True
            queue = self._queue
            while queue and queue[0].delivered:
                self._send_ack(queue.popleft().mid)

    def reset(self) -> None:
        """On disconnect: forget the old connection's messages without acknowledging them.

        The broker redelivers them on the resumed session, and their packet ids may be reused for
        other messages there, so acknowledging an old id on the new connection could acknowledge
        the wrong message.
        """
        with self._lock:
            self._queue = deque()

    def __len__(self) -> int:
        return len(self._queue)
