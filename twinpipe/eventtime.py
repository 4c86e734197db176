"""Whether an envelope's event time (`time_ns`) can be right, judged against its arrival time.

The classic mistake of another producer is a Unix time in seconds, milliseconds or microseconds
where nanoseconds belong (influxdb-client-python #71, #343): 1.7e9, 1.7e12 or 1.7e15 read as ns all
land in January 1970, and InfluxDB stores them there without complaint. The window has three bounds:

* an absolute floor (`earliest_ns`, default 2000-01-01): every seconds/ms/µs value of this century
  read as ns falls before it, while a recording made any time since still passes, however old it is
  when it is replayed;
* a maximum age relative to arrival (`max_age_s`, generous: a publisher's spool may deliver after
  days offline, a replay carries the original times of recordings years old; 0 turns it off);
* a small maximum lead over arrival (`max_future_s`): a reading cannot be taken after it arrived,
  apart from clock skew between hosts; more is a wrong clock or a local time taken for UTC.

Pure: the caller passes the arrival time and the window, so the same record gets the same verdict
whenever it is (re)delivered.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from twinpipe.config.ingestion import IngestionConfig

NS_PER_S = 1_000_000_000
UNITS = (("seconds", 1_000_000_000), ("milliseconds", 1_000_000), ("microseconds", 1_000))


def iso(time_ns: int) -> str:
    """A readable UTC time for messages, also for times Python's datetime cannot hold."""
    try:
        return datetime.fromtimestamp(time_ns / NS_PER_S, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError, OSError):
        return f"{time_ns / NS_PER_S / 31_557_600 + 1970:.0f} (year)"


def _duration(seconds: float) -> str:
    for unit, size in (("years", 31_557_600), ("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


def implausible_time(
    time_ns: int, arrival_ns: int, earliest_ns: int, max_age_s: float, max_future_s: float
) -> str | None:
    """Why `time_ns` cannot be the event time of a record that arrived at `arrival_ns`, or None.

    The reason names the likely unit mistake when scaling the value to nanoseconds would make it
    plausible ("time_ns 1732000000000 looks like milliseconds").
    """
    latest_ns = arrival_ns + int(max_future_s * NS_PER_S)
    oldest_ns = max(earliest_ns, arrival_ns - int(max_age_s * NS_PER_S)) if max_age_s else earliest_ns
    if oldest_ns <= time_ns <= latest_ns:
        return None
    if time_ns > latest_ns:
        ahead_s = (time_ns - arrival_ns) / NS_PER_S
        reason = (
            f"time_ns {time_ns} ({iso(time_ns)}) is {_duration(ahead_s)} after its arrival at"
            f" {iso(arrival_ns)}, more than the {max_future_s:.0f} s allowed"
        )
        whole_hours = round(ahead_s / 1800) / 2
        # Time zones lie within UTC-12 .. UTC+14: a lead of a whole hour beyond that is something else.
        if whole_hours and abs(whole_hours) <= 14 and abs(ahead_s - whole_hours * 3600) < 60:
            reason += f": a clock on local time taken for UTC ({whole_hours:g} h)?"
        return reason
    for unit, factor in UNITS:  # against the floor only: a wrong unit is the likelier mistake
        scaled = time_ns * factor
        if earliest_ns <= scaled <= latest_ns:
            return f"time_ns {time_ns} looks like {unit}: as nanoseconds it is {iso(time_ns)}"
    if time_ns < earliest_ns:
        return f"time_ns {time_ns} ({iso(time_ns)}) is before the earliest plausible time {iso(earliest_ns)}"
    return (
        f"time_ns {time_ns} ({iso(time_ns)}) is {_duration((arrival_ns - time_ns) / NS_PER_S)} before its"
        f" arrival at {iso(arrival_ns)}, more than the {max_age_s:.0f} s allowed"
    )


def arrival_ns(kafka_timestamp_ms: int | None, default_ns: int | None = None) -> int:
    """A Kafka record's timestamp (ms) in ns: the arrival every stage judges a record's event time
    against, so a re-delivery gets the same verdict. Without one (None or ≤ 0): `default_ns`, else now."""
    if kafka_timestamp_ms and kafka_timestamp_ms > 0:
        return kafka_timestamp_ms * 1_000_000
    return time.time_ns() if default_ns is None else default_ns


class EventTimeWindow:
    """The ingestion's window (`ingestion.earliest_event_time`, `max_event_age_s`,
    `max_event_future_s`), for every stage that must agree with what the ingestion stores: the
    ingestion itself, alerting and twin_state."""

    def __init__(self, window: IngestionConfig) -> None:
        self._window = window
        self._earliest_ns = window.earliest_event_ns()
        self._max_age_ns = int(window.max_event_age_s * NS_PER_S) if window.max_event_age_s else 2**64
        self.max_future_ns = int(window.max_event_future_s * NS_PER_S)

    def problem(self, time_ns: int, arrival_ns: int) -> str | None:
        """Why `time_ns` (ns) cannot be the event time of a record that arrived at `arrival_ns` (ns),
        or None; the usual plausible reading costs three comparisons."""
        if (
            time_ns >= self._earliest_ns
            and arrival_ns - self._max_age_ns <= time_ns <= arrival_ns + self.max_future_ns
        ):
            return None
        window = self._window
        return implausible_time(
            time_ns, arrival_ns, self._earliest_ns, window.max_event_age_s, window.max_event_future_s
        )
