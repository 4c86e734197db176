"""Passive measurement: hop delays of every reading read from Kafka, and p50/p95/p99 summaries.

Pure apart from the metrics it updates, so it is tested by feeding it envelopes.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterable, Sequence

from influxdb_client import Point, WritePrecision

from latency_probe import metrics
from twinpipe.envelope import Envelope
from twinpipe.trace import Hop, hop_delays, judge, stamps

OTHER_DEVICES = "_other"
QUANTILES = (0.5, 0.95, 0.99)
WINDOW_SAMPLES = 20_000  # per hop and summary interval; beyond this the newest are kept


class DeviceLabels:
    """The first `limit` devices seen get their own label value; the rest share "_other", so the
    number of series stays bounded however many boards there are."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._known: set[str] = set()

    def __call__(self, device: str) -> str:
        if device in self._known:
            return device
        if len(self._known) < self._limit:
            self._known.add(device)
            return device
        return OTHER_DEVICES


def quantiles(samples: Sequence[float], qs: Iterable[float] = QUANTILES) -> list[float]:
    """Nearest-rank quantiles of a non-empty sample."""
    ordered = sorted(samples)
    return [ordered[max(0, math.ceil(q * len(ordered)) - 1)] for q in qs]


def summary_lines(measurement: str, windows: dict[str, Sequence[float]], now_ns: int) -> list[str]:
    """One line-protocol point per hop with samples: tag hop, fields p50/p95/p99 (seconds) and count."""
    lines = []
    for hop, samples in sorted(windows.items()):
        if samples:
            p50, p95, p99 = quantiles(samples)
            point = Point(measurement).tag("hop", hop).field("p50", p50).field("p95", p95).field("p99", p99)
            point.field("count", len(samples)).time(now_ns, WritePrecision.NS)
            lines.append(point.to_line_protocol())
    return lines


class HopRecorder:
    def __init__(self, device_labels: int, max_plausible_s: float) -> None:
        self._label = DeviceLabels(device_labels)
        self._max_plausible_s = max_plausible_s
        self.windows: dict[str, deque[float]] = {}
        self._lock = threading.Lock()  # samples come from the consumer loop and the probing thread

    def record(self, envelope: Envelope, kafka_timestamp_ms: int | None, now_ns: int) -> list[Hop]:
        """Observe every hop of one reading; returns the hops that were accepted."""
        known = [*stamps(envelope, kafka_timestamp_ms), ("probe", now_ns)]
        hops = hop_delays(known)
        hops.append(Hop("read_to_probe", (now_ns - envelope.time_ns) / 1e9))
        device = self._label(envelope.device)
        metrics.LAST_SEEN.labels(device).set(envelope.time_ns / 1e9)
        accepted = []
        for hop in hops:
            verdict = judge(hop.seconds, self._max_plausible_s)
            if verdict != "ok":
                metrics.CLOCK_ANOMALIES.labels(hop.name, verdict).inc()
                continue
            metrics.HOP_DELAY.labels(hop.name, device).observe(hop.seconds)
            self.add_sample(hop.name, hop.seconds)
            accepted.append(hop)
        return accepted

    def add_sample(self, hop: str, seconds: float) -> None:
        with self._lock:
            window = self.windows.get(hop)
            if window is None:
                window = self.windows[hop] = deque(maxlen=WINDOW_SAMPLES)
            window.append(seconds)

    def take_windows(self) -> dict[str, deque[float]]:
        """The samples since the last call, and a fresh start."""
        with self._lock:
            windows, self.windows = self.windows, {}
        return windows
