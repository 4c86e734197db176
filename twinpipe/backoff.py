"""Exponential backoff with jitter, for every retry loop in the stages."""

from __future__ import annotations

import random

# One generator for every Backoff: seeding a new Random from os.urandom costs microseconds, and the
# bridge makes a Backoff per record (profiled: 10 % of its CPU before this was shared).
_JITTER = random.Random()


class Backoff:
    def __init__(self, initial_s: float, maximum_s: float, rng: random.Random | None = None) -> None:
        self.initial_s = initial_s
        self.maximum_s = maximum_s
        self._rng = rng or _JITTER
        self._attempt = 0

    def next_delay(self) -> float:
        """The delay before the next attempt: doubles up to the maximum, with ±20 % jitter."""
        delay = min(self.maximum_s, self.initial_s * 2**self._attempt)
        self._attempt = min(self._attempt + 1, 32)
        return delay * self._rng.uniform(0.8, 1.2)
