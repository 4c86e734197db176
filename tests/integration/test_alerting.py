"""The alerting stage on real servers: a simulated board ramped over a threshold and back, the stage
handed to a second replica mid-PENDING (a rebalance, then SIGTERM of the first) and restarted
mid-FIRING (SIGKILL), the board silenced (deadman), and a real
Alertmanager (Debian's prometheus-alertmanager) receiving and resolving the alert."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer

from alerting.ruleset import fingerprint, label_fingerprint
from devstack.alertmanager import Alertmanager
from devstack.process import free_port, http_get, metric_value, stage_ready
from tests.dashboards import TWIN_DASHBOARD, load, queries, substitute
from tests.harness import Pipeline, poll

RATE_HZ = 10.0
# Event time from the first reading: 25 °C; over 35 (raise) at 2 + 2·10/15 = 3.33 s, PENDING; FIRING
# for_s = 4 later (7.33 s); held at 40 °C until 24 s; under 33 (clear) at 24 + 2·7/15 = 24.93 s, RESOLVED.
RAMP = {"sensor": "temperature", "by": 15.0, "start_s": 2.0, "up_s": 2.0, "hold_s": 20.0, "down_s": 2.0}
SILENCE_S = 3.0


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Alertmanager]:
    with Alertmanager(tmp_path / "alertmanager") as server:
        yield server


class Received:
    """Every payload on the alert topics, in arrival order (MQTT QoS 1)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.client = pipeline.mqtt_client()
        self.client.on_message = lambda _c, _u, message: self._add(json.loads(message.payload))
        self.client.subscribe(f"{pipeline.mqtt_prefix}/+/alerts", qos=1)

    def _add(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.events.append(event)

    def states(self, rule: str) -> list[str]:
        with self._lock:
            return [e["state"] for e in self.events if e["rule"] == rule]

    def wait(self, rule: str, state: str, timeout_s: float = 30) -> dict[str, Any]:
        poll(lambda: self.states(rule), lambda states: state in states, timeout_s, f"{rule} {state} on MQTT")
        with self._lock:
            return next(e for e in self.events if e["rule"] == rule and e["state"] == state)


def state_written(pipeline: Pipeline, topic: str, rule: str, state: str) -> bool:
    """Whether the state topic holds a document with `rule` of sim-1's temperature in `state`."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=[pipeline.stack.kafka.bootstrap],
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=1500,
    )
    try:
        for record in consumer:
            if record.value and record.value.startswith(b"{"):
                machine = json.loads(record.value)["machines"].get(f"temperature|{rule}")
                if machine and machine["state"] == state:
                    return True
    finally:
        consumer.close()
    return False


def test_ramp_over_a_threshold_and_back_through_restarts_deadman_and_alertmanager(
    pipeline: Pipeline, alertmanager: Alertmanager
) -> None:
    run = pipeline.id
    settings = {
        "publisher": {
            "simulator": {
                "rate_hz": RATE_HZ,
                "outlier_probability": 0.0,
                "sensors": {  # every datastream model.things.simulated declares (check-config)
                    "temperature": {"mean": 25.0, "stddev": 0.0, "drift": 0.0},
                    "humidity": {"mean": 50.0, "stddev": 0.0, "drift": 0.0},
                    "pressure": {"mean": 1013.0, "stddev": 0.0, "drift": 0.0},
                },
                "ramp": RAMP,
            }
        },
        "alerting": {
            "group_id": f"alerting-{run}",
            "start_from": "earliest",
            "anomaly_topic": f"anomalies-{run}",
            "topic": f"alerts-{run}",
            "state_topic": f"alert-state-{run}",
            "mqtt_topic_template": f"{pipeline.mqtt_prefix}/{{device}}/alerts",
            "commit_interval_s": 0.5,
            "alertmanager": {"enabled": True, "url": alertmanager.url, "resend_interval_s": 1.0},
            "rules": {
                "hot": {
                    "observed_property": "temperature",
                    "kind": "above",
                    "raise": 35.0,
                    "clear": 33.0,
                    "for_s": 4.0,
                    "severity": "critical",
                },
                "silent": {"observed_property": "temperature", "kind": "no_data", "silence_s": SILENCE_S},
                "odd": {"observed_property": "temperature", "kind": "anomaly", "window_s": 1.0},
            },
        },
    }
    received = Received(pipeline)
    bridge = pipeline.stage("mqtt_kafka_bridge", settings)
    alerting = pipeline.stage("alerting", settings)
    poll(bridge.log, lambda log: "connected to MQTT broker" in log, 20, "bridge connected")
    poll(alerting.log, lambda log: "partitions assigned" in log, 30, "alerting assigned")
    publisher = pipeline.stage("publisher", settings)

    # Mid-PENDING, a second replica joins (a rebalance), then the first stops (SIGTERM, another): the
    # pending alert moves with its partition and completes, without a second PENDING.
    pending = received.wait("hot", "pending")
    assert 35.0 < pending["value"] <= 40.0 and pending["datastream"] == "sim-1:temperature"
    health = free_port()
    assigned = alerting.log().count("partitions assigned: ")  # both replicas log into one file
    second = pipeline.stage("alerting", settings, env={"TWINPIPE__HEALTH__PORT": str(health)})
    poll(
        lambda: second.log().count("partitions assigned: "), lambda n: n >= assigned + 2, 30, "the rebalance"
    )
    alerting.stop()
    alerting = second
    firing = received.wait("hot", "firing", timeout_s=40)
    assert firing["starts_ns"] == pending["starts_ns"] == pending["time_ns"]
    assert firing["time_ns"] - firing["starts_ns"] >= 4 * 10**9, "for_s counted in event time"
    assert firing["time_ns"] - firing["starts_ns"] < 4 * 10**9 + 2 * 10**9 / RATE_HZ

    # Alertmanager holds it, under the fingerprint computed the way twinpipe computes its own.
    held = poll(
        alertmanager.alerts,
        lambda alerts: any(a["labels"]["alertname"] == "hot" for a in alerts),
        20,
        "the alert in Alertmanager",
    )
    alert = next(a for a in held if a["labels"]["alertname"] == "hot")
    assert alert["labels"]["device"] == "sim-1" and alert["labels"]["severity"] == "critical"
    assert alert["fingerprint"] == label_fingerprint(alert["labels"])
    # The second replica sent `firing` before the group settled after the first one left: it may still
    # be rejoining (no partitions, not ready) on a loaded machine (seen: two rejoins in 4 s).
    poll(lambda: stage_ready(health), bool, 30, "the second replica ready")
    page = poll(
        lambda: http_get(f"http://127.0.0.1:{health}/metrics")[1],
        lambda page: metric_value(
            page, "twinpipe_alerting_alerts", rule="hot", severity="critical", state="firing"
        ),
        10,
        "the firing alert in the gauge",
    )
    assert metric_value(page, "twinpipe_alerting_states_restored_total") >= 1

    # Restart mid-FIRING, killed: the firing state was checkpointed; no re-fire, the alert resolves.
    poll(
        lambda: state_written(pipeline, f"alert-state-{run}", "hot", "firing"),
        bool,
        20,
        "firing checkpointed",
    )
    alerting.kill()
    alerting = pipeline.stage("alerting", settings)
    resolved = received.wait("hot", "resolved", timeout_s=60)
    assert resolved["value"] < 33.0 and resolved["ends_ns"] == resolved["time_ns"]
    assert resolved["starts_ns"] == pending["starts_ns"]
    poll(
        alertmanager.alerts,
        lambda alerts: not any(a["labels"]["alertname"] == "hot" for a in alerts),
        20,
        "Alertmanager resolving the alert",
    )

    # Deadman: the board goes silent; FIRING after the silence given (wall clock), not before.
    # Meanwhile an anomaly event (the predictive stage's shape): FIRING, RESOLVED 1 s (window_s) later.
    publisher.stop()
    anomaly = {"v": 1, "device": "sim-1", "datastream": "sim-1:temperature", "value_name": "temperature",
               "time_ns": time.time_ns(), "value": 41.0, "forecast": 25.0, "lower": 22.0, "upper": 28.0,
               "horizon_s": 0.1, "coverage": 0.9, "model": "test"}  # fmt: skip
    producer = KafkaProducer(bootstrap_servers=[pipeline.stack.kafka.bootstrap], acks="all")
    producer.send(f"anomalies-{run}", key=b"sim-1", value=json.dumps(anomaly).encode()).get(10)
    producer.close()
    odd = received.wait("odd", "resolved", timeout_s=20)
    assert 1.0 <= (odd["ends_ns"] - odd["starts_ns"]) / 1e9 < 1.5 and odd["value"] == 41.0
    silent = received.wait("silent", "firing", timeout_s=30)
    assert SILENCE_S <= silent["value"] < SILENCE_S + 1.0, silent
    assert silent["clock"] == "wall_clock"

    assert received.states("hot") == ["pending", "firing", "resolved"], received.events
    assert received.states("silent") == ["firing"], received.events
    assert received.states("odd") == ["firing", "resolved"], received.events
    expected_fp = fingerprint("hot", "sim-1", "sim-1:temperature")
    assert {e["fingerprint"] for e in received.events if e["rule"] == "hot"} == {expected_fp}

    # The same transitions in Kafka (key = device) and in InfluxDB.
    records = pipeline.kafka_records(f"alerts-{run}", 6)
    assert {r.key for r in records} == {b"sim-1"}
    in_kafka = [(json.loads(r.value)["rule"], json.loads(r.value)["state"]) for r in records]
    expected = [("hot", "pending"), ("hot", "firing"), ("hot", "resolved"), ("silent", "firing")]
    assert sorted(in_kafka) == sorted([*expected, ("odd", "firing"), ("odd", "resolved")])
    rows = poll(
        lambda: pipeline.influx_rows('SELECT * FROM "twin_alerts"'),
        lambda rows: len(rows) >= 6,
        20,
        "transitions in InfluxDB",
    )
    assert sorted((row["rule"], row["state"]) for row in rows) == sorted(in_kafka)

    # The Digital twin dashboard's alert table and annotations show these points.
    shown = [q for q in queries(load(TWIN_DASHBOARD)) if '"twin_alerts"' in q.text]
    assert [q.panel for q in shown] == ["Alerts", "annotation Alerts"]
    for query in shown:
        found = pipeline.influx_rows(substitute(query.text, {"device": "sim-1"}))
        assert sorted((row["rule"], row["state"]) for row in found) == sorted(in_kafka), query
        assert all(row["text"] and row["device"] == "sim-1" for row in found)
        elsewhere = pipeline.influx_rows(substitute(query.text, {"device": "nobody-0"}))
        assert elsewhere == [], "filtered by $device"
    received.client.loop_stop()
