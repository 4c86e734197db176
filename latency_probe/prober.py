"""Active measurement: probe readings injected at the entry and timed until Kafka and InfluxDB have them.

This class only keeps the books (which probes are pending where, since when); sending and looking
are done by the caller, so it is tested without servers. Thread-safe: the Kafka sightings come from
the consumer loop, the InfluxDB sightings from the probing thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from twinpipe.envelope import PROBE_DEVICE, TRACE_PUBLISH, Envelope

PROBE_VALUE = "probe"


class ProbeBook:
    def __init__(self, boot: str, timeout_s: float) -> None:
        self.boot = boot
        self._timeout_ns = int(timeout_s * 1e9)
        self._next_seq = 0
        self._pending: dict[str, dict[int, int]] = {"kafka": {}, "influxdb": {}}  # stage → seq → sent ns
        self._lock = threading.Lock()

    def new_probe(self, now_ns: int) -> Envelope:
        with self._lock:
            seq, self._next_seq = self._next_seq, self._next_seq + 1
            for pending in self._pending.values():
                pending[seq] = now_ns
        return Envelope(PROBE_DEVICE, self.boot, seq, now_ns, {PROBE_VALUE: 1.0}, {TRACE_PUBLISH: now_ns})

    def is_mine(self, envelope: Envelope) -> bool:
        return envelope.device == PROBE_DEVICE and envelope.boot == self.boot

    def seen(self, stage: str, seqs: Iterable[int], now_ns: int) -> list[float]:
        """Delays (s) of the pending probes among `seqs` at `stage`; each is reported once."""
        with self._lock:
            pending = self._pending[stage]
            return [(now_ns - pending.pop(seq)) / 1e9 for seq in seqs if seq in pending]

    def oldest_pending(self, stage: str) -> int | None:
        """Send time (ns) of the oldest probe still pending at `stage`."""
        with self._lock:
            return min(self._pending[stage].values(), default=None)

    def expire(self, now_ns: int) -> dict[str, list[int]]:
        """Probes pending longer than the timeout, per stage: they are lost and no longer awaited."""
        lost: dict[str, list[int]] = {}
        with self._lock:
            for stage, pending in self._pending.items():
                expired = [seq for seq, sent in pending.items() if now_ns - sent > self._timeout_ns]
                for seq in expired:
                    del pending[seq]
                lost[stage] = expired
        return lost
