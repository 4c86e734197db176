"""The twin state stage's Prometheus metrics (served on /metrics at health.port; see README.md)."""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram

from twin_state.lifecycle import STATES, Transition, unacknowledged

COMMANDS = Counter(
    "twinpipe_twin_state_commands",
    "Command lifecycle transitions, by the state a command entered",
    ["state"],
)
SINCE_QUEUED = Histogram(
    "twinpipe_twin_state_command_seconds",
    "Time from queued (Kafka acknowledged the command) to each later state, wall clock",
    ["state"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0),
)
OPEN = Gauge("twinpipe_twin_state_commands_open", "Commands neither applied, expired nor failed")
UNACKNOWLEDGED = Gauge(
    "twinpipe_twin_state_commands_unacknowledged", "Open commands the board has not acknowledged yet"
)
OLDEST_UNACKNOWLEDGED = Gauge(
    "twinpipe_twin_state_oldest_unacknowledged_seconds",
    "Age of the oldest open command not acknowledged yet (0 when there is none), wall clock",
)
DEAD_LETTERS = Counter(
    "twinpipe_twin_state_dead_letters",
    "Records of the command topic (kind command) or event topic (kind event) refused and sent to the"
    " dead-letter topic with their reason",
    ["kind"],
)
READINGS_SKIPPED = Counter(
    "twinpipe_twin_state_readings_skipped",
    "Telemetry readings not taken into the twin because the ingestion dead-letters them, by reason:"
    " implausible_time (event time outside the ingestion's window), out_of_range (a value outside its"
    " datastream's range)",
    ["reason"],
)
for _reason in ("implausible_time", "out_of_range"):
    READINGS_SKIPPED.labels(_reason)
PERSISTED = Counter("twinpipe_twin_state_persisted", "State documents written to the state topic")
INFLUX_DROPPED = Counter(
    "twinpipe_twin_state_influx_dropped_lines",
    "Journal/settings lines for InfluxDB dropped: buffer full while InfluxDB was away, or refused",
)
REQUESTS = Counter(
    "twinpipe_twin_state_requests", "HTTP API requests answered, by route and status", ["route", "status"]
)

for _state in STATES:
    COMMANDS.labels(_state)
    if _state != "queued":
        SINCE_QUEUED.labels(_state)
for _kind in ("command", "event"):
    DEAD_LETTERS.labels(_kind)


def count(transitions: list[Transition]) -> None:
    for t in transitions:
        COMMANDS.labels(t.state).inc()
        if t.state != "queued":
            SINCE_QUEUED.labels(t.state).observe(t.since_queued_s)


def gauge_open(open_commands: list[dict], now_ns: int | None = None) -> None:
    now_ns = time.time_ns() if now_ns is None else now_ns
    waiting = [e for e in open_commands if unacknowledged(e)]
    OPEN.set(len(open_commands))
    UNACKNOWLEDGED.set(len(waiting))
    oldest = min((e["created_ns"] for e in waiting), default=None)
    OLDEST_UNACKNOWLEDGED.set(max(0.0, (now_ns - oldest) / 1e9) if oldest is not None else 0.0)
