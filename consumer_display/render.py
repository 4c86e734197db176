"""Turning envelopes into screen lines, and keeping the screen readable at thousands of messages/s."""

from __future__ import annotations

import time
from collections import deque
from datetime import UTC, datetime

from twinpipe.envelope import Envelope
from twinpipe.trace import hop_delays, stamps


def hop_delays_ms(envelope: Envelope, kafka_timestamp_ms: int | None, now_ns: int) -> dict[str, float]:
    """Delay of each hop recorded in the trace, then Kafka → here, as "read→publish": milliseconds."""
    known = [*stamps(envelope, kafka_timestamp_ms), ("here", now_ns)]
    return {hop.name.replace("_to_", "→"): hop.seconds * 1e3 for hop in hop_delays(known)}


def format_line(envelope: Envelope, delays_ms: dict[str, float]) -> str:
    """A replayed reading (`origin`) shows its date too (recorded times are rarely today's) and the
    origin; its hops are the replay's own trip through the pipeline."""
    moment = datetime.fromtimestamp(envelope.time_ns / 1e9, UTC)
    stamp = moment.strftime("%Y-%m-%d %H:%M:%S" if envelope.origin else "%H:%M:%S.%f")
    stamp = stamp if envelope.origin else stamp[:-3]
    values = " ".join(f"{name}={value:.2f}" for name, value in envelope.values.items())
    hops = " ".join(f"{hop} {ms:.1f}ms" for hop, ms in delays_ms.items())
    origin = f" ({envelope.origin})" if envelope.origin else ""
    return f"{stamp} {envelope.device}{origin} #{envelope.seq} {values}" + (f" | {hops}" if hops else "")


class Throttle:
    """Lets at most `max_lines_per_s` lines through; the rest are summarised once per second."""

    def __init__(self, max_lines_per_s: float, clock=time.monotonic) -> None:
        self._max = max_lines_per_s
        self._clock = clock
        self._window_start = clock()
        self._shown = 0
        self._skipped = 0
        self._skipped_devices: set[str] = set()

    def admit(self, device: str) -> bool:
        if self._shown < self._max:
            self._shown += 1
            return True
        self._skipped += 1
        self._skipped_devices.add(device)
        return False

    def summary(self) -> str | None:
        """Once per second: a line about what was not shown, and a fresh budget."""
        now = self._clock()
        elapsed = now - self._window_start
        if elapsed < 1.0:
            return None
        line = None
        if self._skipped:
            line = (
                f"… {self._skipped} more messages from {len(self._skipped_devices)} device(s) in "
                f"{elapsed:.1f} s ({(self._shown + self._skipped) / elapsed:.0f} msg/s)"
            )
        self._window_start, self._shown, self._skipped = now, 0, 0
        self._skipped_devices.clear()
        return line


class Redeliveries:
    """Recognises a reading delivered again: the pipeline is at-least-once, so a reconnect can put the
    same reading (device, boot, seq) into Kafka twice. Remembers the last `memory` readings;
    a repeat further back than that is shown again."""

    def __init__(self, memory: int = 4096) -> None:
        self._order: deque[tuple[str, str, int]] = deque()
        self._seen: set[tuple[str, str, int]] = set()
        self._memory = memory
        self.repeats = 0

    def is_repeat(self, envelope: Envelope) -> bool:
        key = (envelope.device, envelope.boot, envelope.seq)
        if key in self._seen:
            self.repeats += 1
            return True
        self._seen.add(key)
        self._order.append(key)
        if len(self._order) > self._memory:
            self._seen.discard(self._order.popleft())
        return False
