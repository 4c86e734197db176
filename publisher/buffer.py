"""The bounded buffer between the board reader and the MQTT sender."""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class DropOldestBuffer(Generic[T]):
    """Never blocks the producer: when full, the oldest item is evicted, counted and returned.

    A live twin wants the newest readings most, so the oldest are the ones given up.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.dropped = 0
        self._items: deque[T] = deque()
        self._ready = threading.Condition()

    def put(self, item: T) -> T | None:
        with self._ready:
            evicted = None
            if len(self._items) >= self.capacity:
                evicted = self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._ready.notify()
            return evicted

    def get(self, timeout: float) -> T | None:
        with self._ready:
            if not self._items:
                self._ready.wait(timeout)
            return self._items.popleft() if self._items else None

    def __len__(self) -> int:
        return len(self._items)
