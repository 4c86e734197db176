"""Where transitions go besides Kafka and MQTT: InfluxDB (for Grafana) and Alertmanager.

Both run in a thread of their own behind a bounded buffer, so a slow or absent server never delays
the Kafka and MQTT events. What they send is built by pure functions (`influx_line`,
`alertmanager_alert`), tested without servers.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

from influxdb_client import Point, WritePrecision

from alerting import metrics
from twinpipe.backoff import Backoff
from twinpipe.config.alerting import AlertmanagerConfig
from twinpipe.influx import InfluxWriter, Rejected, Unavailable
from twinpipe.ratelog import ThrottledLog

log = logging.getLogger("alerting")
SHUTDOWN_RETRY_S = 10.0  # on stop, how long unwritten points are still retried


def summary(event: dict[str, Any]) -> str:
    """One line for people: `temperature_high firing: sim-1:temperature 35.4 Cel (raise 35.0)`."""
    value = event["value"]
    shown = f"{value:.4g}" if isinstance(value, int | float) else "-"
    threshold = event["threshold"]
    level = (
        f" ({'silence' if event['kind'] == 'no_data' else 'raise'} {threshold:g})"
        if threshold is not None
        else ""
    )
    return f"{event['rule']} {event['state']}: {event['datastream']} {shown} {event['unit']}{level}".strip()


def influx_line(event: dict[str, Any], measurement: str) -> str:
    """The transition as one point of `measurement`: tags device, rule, severity, state, fingerprint;
    fields value, threshold, starts_ns, ends_ns, datastream, text; time = the transition's time (ns)."""
    point = (
        Point(measurement)
        .tag("device", event["device"])
        .tag("rule", event["rule"])
        .tag("severity", event["severity"])
        .tag("state", event["state"])
        .tag("fingerprint", event["fingerprint"])
        .field("datastream", event["datastream"])
        .field("text", summary(event))
        .field("starts_ns", int(event["starts_ns"]))
        .time(int(event["time_ns"]), WritePrecision.NS)
    )
    if isinstance(event["value"], int | float):
        point = point.field("value", float(event["value"]))
    if event["threshold"] is not None:
        point = point.field("threshold", float(event["threshold"]))
    if event["ends_ns"] is not None:
        point = point.field("ends_ns", int(event["ends_ns"]))
    return point.to_line_protocol()


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def alertmanager_alert(
    event: dict[str, Any], extra_labels: dict[str, str], now_ns: int, resend_interval_s: float
) -> dict[str, Any]:
    """The postableAlert of Alertmanager's v2 API (api/v2/openapi.yaml) for a firing or resolved
    transition. A firing alert's endsAt is now + 4 × the resend interval, as Prometheus sets it
    (rules/alerting.go, resendDelay), so Alertmanager resolves it by itself if twinpipe goes away."""
    labels = {
        **extra_labels,
        "alertname": event["rule"],
        "device": event["device"],
        "datastream": event["datastream"],
        "severity": event["severity"],
    }
    ends = event["ends_ns"] if event["state"] == "resolved" else now_ns + int(4 * resend_interval_s * 1e9)
    return {
        "labels": labels,
        "annotations": {
            "summary": summary(event),
            "value": f"{event['value']}",
            "threshold": f"{event['threshold']}",
            "unit": event["unit"],
        },
        "startsAt": _iso(event["starts_ns"]),
        "endsAt": _iso(ends),
    }


class InfluxSink:
    """Writes transition points in batches from a thread; a full buffer drops and counts."""

    def __init__(self, writer: InfluxWriter, measurement: str, capacity: int) -> None:
        self._writer = writer
        self._measurement = measurement
        self._queue: queue.Queue[str] = queue.Queue(maxsize=capacity)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="influx", daemon=True)
        self._throttled = ThrottledLog(log, interval_s=30)
        self.failing: str | None = None

    def __enter__(self) -> InfluxSink:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)
        self._writer.close()

    def put(self, event: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(influx_line(event, self._measurement))
        except queue.Full:
            metrics.INFLUX_DROPPED.labels("overflow").inc()
            self._throttled.warning("overflow", "InfluxDB buffer full: transition points dropped")

    def _run(self) -> None:
        backoff = Backoff(0.5, 10.0)
        batch: list[str] = []
        give_up_at: float | None = None
        while True:
            if self._stop.is_set():
                give_up_at = give_up_at or time.monotonic() + SHUTDOWN_RETRY_S
                if not batch and self._queue.empty():
                    return
                if time.monotonic() > give_up_at:
                    log.error("stopping with %d transition points not written to InfluxDB", len(batch))
                    return
            try:
                batch.append(self._queue.get(timeout=0.2))
                while len(batch) < 5000:
                    batch.append(self._queue.get_nowait())
            except queue.Empty:
                pass
            if not batch:
                continue
            try:
                self._writer.write(batch)
            except Rejected as exc:
                metrics.INFLUX_DROPPED.labels("rejected").inc(len(batch))
                log.error("InfluxDB refused %d transition points: %s", len(batch), exc)
            except Unavailable as exc:
                self.failing = str(exc)
                self._throttled.warning("unavailable", "InfluxDB unavailable (%s); retrying", exc)
                time.sleep(min(backoff.next_delay(), 1.0) if self._stop.is_set() else backoff.next_delay())
                continue
            else:
                metrics.INFLUX_WRITTEN.inc(len(batch))
            self.failing = None
            backoff = Backoff(0.5, 10.0)
            batch = []


class AlertmanagerForwarder:
    """Keeps the firing alerts and sends them to Alertmanager on every change and every
    `resend_interval_s` (Alertmanager expects clients to repeat firing alerts); a resolved alert is
    sent until Alertmanager took it once. Failed requests are retried with backoff."""

    def __init__(self, config: AlertmanagerConfig) -> None:
        self._config = config
        self._url = config.url.rstrip("/") + "/api/v2/alerts"
        self._lock = threading.Lock()
        # Keyed by (fingerprint, severity): Alertmanager tells alerts apart by all their labels, so an
        # alert whose severity changed is another one there, and its old label set is resolved apart.
        self._firing: dict[tuple[str, str], dict[str, Any]] = {}  # firing events
        self._resolved: dict[tuple[str, str], dict[str, Any]] = {}  # resolved events not yet sent
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alertmanager", daemon=True)
        self._throttled = ThrottledLog(log, interval_s=30)

    def __enter__(self) -> AlertmanagerForwarder:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=self._config.timeout_s + 1)

    def put(self, event: dict[str, Any]) -> None:
        fingerprint = (event["fingerprint"], event["severity"])
        with self._lock:
            if event["state"] == "firing":
                self._firing[fingerprint] = event
                self._resolved.pop(fingerprint, None)
            elif event["state"] == "resolved":
                self._firing.pop(fingerprint, None)
                self._resolved[fingerprint] = event
            else:
                return
        self._wake.set()

    def forget(self, fingerprints: set[str]) -> None:
        """Alerts of partitions this replica no longer owns: their new owner sends them."""
        with self._lock:
            for key in [key for key in self._firing if key[0] in fingerprints]:
                del self._firing[key]

    def _run(self) -> None:
        backoff = Backoff(0.5, 30.0)
        while True:
            self._wake.wait(self._config.resend_interval_s)
            self._wake.clear()
            with self._lock:
                resolved = dict(self._resolved)
            body = self.body(time.time_ns())
            if body:
                if self._post(body):
                    backoff = Backoff(0.5, 30.0)
                    with self._lock:
                        for fingerprint, event in resolved.items():
                            if self._resolved.get(fingerprint) is event:
                                del self._resolved[fingerprint]
                elif not self._stop.is_set():
                    self._stop.wait(backoff.next_delay())
                    self._wake.set()
            if self._stop.is_set():
                return

    def body(self, now_ns: int) -> list[dict[str, Any]]:
        """The postableAlerts to send now: every firing alert and every resolved one not yet taken."""
        with self._lock:
            events = [*self._firing.values(), *self._resolved.values()]
        return [
            alertmanager_alert(e, self._config.labels, now_ns, self._config.resend_interval_s) for e in events
        ]

    def _post(self, body: list[dict[str, Any]]) -> bool:
        request = urllib.request.Request(
            self._url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self._config.timeout_s) as response:
                response.read()
        except (urllib.error.URLError, OSError) as exc:
            metrics.ALERTMANAGER.labels("error").inc()
            self._throttled.warning("post", "Alertmanager %s: %s; retrying", self._url, exc)
            return False
        metrics.ALERTMANAGER.labels("ok").inc()
        return True
