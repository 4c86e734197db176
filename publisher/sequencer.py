"""Stamping readings into envelopes: per-device sequence numbers, boot id and event time."""

from __future__ import annotations

from twinpipe.envelope import Envelope


class Sequencer:
    """Not thread-safe: each device's readings come from one source thread."""

    def __init__(self, device: str, boot: str) -> None:
        self.device = device
        self.boot = boot
        self._next_seq = 0
        self._last_ns = 0

    def restart(self, boot: str) -> None:
        """The board restarted (e.g. replugged: a USB-powered board resets): a new boot id, sequence
        numbers from 0 again; event times keep increasing."""
        self.boot = boot
        self._next_seq = 0

    def stamp(self, values: dict[str, float], read_ns: int, origin: str | None = None) -> Envelope:
        """A replayed reading (`origin`) keeps its recorded time exactly: the replay checked its order,
        and a looped replay with time_shift keep sends the same times again on purpose."""
        if origin is None:
            # Event times of one device must differ: InfluxDB keeps one point per series and timestamp.
            time_ns = max(read_ns, self._last_ns + 1)
            self._last_ns = time_ns
        else:
            time_ns = read_ns
        envelope = Envelope(self.device, self.boot, self._next_seq, time_ns, values, origin=origin)
        self._next_seq += 1
        return envelope
