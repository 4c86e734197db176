"""The bounded buffer between the board reader and the MQTT sender."""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class DropOldestBuffer(Generic[T]):
    """Never blocks the producer: when full, the oldest item is evicted, counted and returned.

    A live twin wants the newest readings most, so the oldest are the ones given up. A replay wants
    every row instead, and waits for room with `put_waiting`.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.dropped = 0
        self._items: deque[T] = deque()
        lock = threading.Lock()
        self._ready = threading.Condition(lock)
        self._room = threading.Condition(lock)

    def put(self, item: T) -> T | None:
        with self._ready:
            evicted = None
            if len(self._items) >= self.capacity:
                evicted = self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._ready.notify()
            return evicted

    def put_waiting(self, item: T, stop: threading.Event, poll_s: float = 0.2) -> bool:
        """Blocks while the buffer is full; False (item not added) once `stop` is set."""
        with self._ready:
            while len(self._items) >= self.capacity:
                if stop.is_set():
                    return False
                self._room.wait(poll_s)
            self._items.append(item)
            self._ready.notify()
            return True

    def get(self, timeout: float) -> T | None:
        with self._ready:
            if not self._items:
                self._ready.wait(timeout)
            if not self._items:
                return None
            item = self._items.popleft()
            self._room.notify()
            return item

    def __len__(self) -> int:
        return len(self._items)
