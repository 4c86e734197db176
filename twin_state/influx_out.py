"""The command journal and the settings' desired/reported values as InfluxDB points, for Grafana's
Commands dashboard (grafana/dashboards/commands.json), written by a background thread in batches.

    twin_commands,device=<d>,state=<state> id="<hex>",settings="<JSON>",detail="...",since_queued_s=<s>
    twin_settings,device=<d>,setting=<name>,side=desired|reported value=<number, bool as 1/0>
                                                                  (enum values: text="<value>")

Lines wait in a bounded buffer while InfluxDB is away; past `max_lines` the oldest are dropped,
counted and logged. InfluxDB refusing lines (they cannot succeed later) drops them the same way.
"""

from __future__ import annotations

import collections
import logging
import threading

import orjson
from influxdb_client import Point, WritePrecision

from twin_state import metrics
from twin_state.lifecycle import Transition
from twin_state.store import SettingChange
from twinpipe.influx import InfluxWriter, Rejected, Unavailable
from twinpipe.ratelog import ThrottledLog

log = logging.getLogger("twinpipe.twin_state")


def transition_line(measurement: str, t: Transition) -> str:
    point = (
        Point(measurement)
        .tag("device", t.device)
        .tag("state", t.state)
        .field("id", t.id)
        .field("settings", orjson.dumps(t.settings).decode())
        .field("detail", t.detail)
        .field("since_queued_s", float(t.since_queued_s))
        .time(t.time_ns, WritePrecision.NS)
    )
    return point.to_line_protocol()


def setting_line(measurement: str, change: SettingChange) -> str:
    point = (
        Point(measurement).tag("device", change.device).tag("setting", change.name).tag("side", change.side)
    )
    value = change.value
    if isinstance(value, bool | int | float):
        point = point.field("value", float(value))
    else:
        point = point.field("text", str(value))
    return point.time(change.time_ns, WritePrecision.NS).to_line_protocol()


class InfluxOut:
    def __init__(
        self,
        writer: InfluxWriter,
        commands_measurement: str,
        settings_measurement: str,
        max_lines: int = 100_000,
        interval_s: float = 1.0,
    ) -> None:
        self.writer = writer
        self.commands_measurement = commands_measurement
        self.settings_measurement = settings_measurement
        self.max_lines = max_lines
        self.interval_s = interval_s
        self._lines: collections.deque[str] = collections.deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="influx-out", daemon=True)
        self._throttled = ThrottledLog(log, interval_s=30)

    def transitions(self, transitions: list[Transition]) -> None:
        self._add([transition_line(self.commands_measurement, t) for t in transitions])

    def settings(self, changes: list[SettingChange]) -> None:
        self._add([setting_line(self.settings_measurement, c) for c in changes])

    def _add(self, lines: list[str]) -> None:
        with self._lock:
            self._lines.extend(lines)
            overflow = len(self._lines) - self.max_lines
            for _ in range(max(0, overflow)):
                self._lines.popleft()
        if overflow > 0:
            metrics.INFLUX_DROPPED.inc(overflow)
            self._throttled.warning("overflow", "InfluxDB buffer full: dropped the %d oldest lines", overflow)

    def __enter__(self) -> InfluxOut:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)
        self.flush()
        self.writer.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()

    def flush(self) -> bool:
        """Write what is buffered; True when it was written (or refused and dropped). Lines InfluxDB
        could not take now go back to the front of the buffer, within `max_lines`."""
        with self._lock:
            batch = list(self._lines)
            self._lines.clear()
        if not batch:
            return True
        try:
            self.writer.write(batch)
        except Unavailable as exc:
            self._throttled.warning(
                "unavailable", "InfluxDB unavailable, keeping %d lines: %s", len(batch), exc
            )
            self._add_front(batch)
            return False
        except Rejected as exc:
            metrics.INFLUX_DROPPED.inc(len(batch))
            log.error("InfluxDB refused %d journal/settings lines, dropped: %s", len(batch), exc)
        return True

    def _add_front(self, lines: list[str]) -> None:
        with self._lock:
            self._lines.extendleft(reversed(lines))
            overflow = max(0, len(self._lines) - self.max_lines)
            for _ in range(overflow):
                self._lines.popleft()
        if overflow:
            metrics.INFLUX_DROPPED.inc(overflow)
            self._throttled.warning("overflow", "InfluxDB buffer full: dropped the %d oldest lines", overflow)
