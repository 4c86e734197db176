"""Readings at any rate → one mean per fixed step of event time.

Step k of a series covers event times [k·step, (k+1)·step) (ns since epoch), the same buckets as
InfluxQL's `GROUP BY time(<step>s)`, so a warm-up read back from InfluxDB lands on the same steps.
A step is complete when a reading of a later step arrives; readings of a step already completed
(late or re-delivered) are refused and counted by the caller. Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Completed:
    step: int  # index k: the step starts at k·step_ns
    mean: float
    count: int  # readings averaged


class Resampler:
    __slots__ = ("step_ns", "current", "_sum", "_count")

    def __init__(self, step_ns: int) -> None:
        if step_ns <= 0:
            raise ValueError(f"step_ns must be positive, got {step_ns}")
        self.step_ns = step_ns
        self.current: int | None = None  # the step being accumulated
        self._sum = 0.0
        self._count = 0

    def step_of(self, time_ns: int) -> int:
        return time_ns // self.step_ns

    def add(self, time_ns: int, value: float) -> Completed | None | bool:
        """Adds one reading. Returns the step it completed (a reading of a later step completes the
        current one), None when it only accumulated, False when its step is already complete."""
        step = time_ns // self.step_ns
        completed = None
        if self.current is None or step > self.current:
            if self.current is not None and self._count:
                completed = Completed(self.current, self._sum / self._count, self._count)
            self.current, self._sum, self._count = step, 0.0, 0
        elif step < self.current:
            return False
        self._sum += value
        self._count += 1
        return completed

    def flush(self) -> Completed | None:
        """The step being accumulated, completed now (e.g. at the end of a replay); later readings of
        it are refused."""
        if self.current is None or not self._count:
            return None
        done = Completed(self.current, self._sum / self._count, self._count)
        self.current, self._sum, self._count = self.current + 1, 0.0, 0
        return done
