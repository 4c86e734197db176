"""What the alerting stage sends to InfluxDB and Alertmanager, and the bench's Prometheus figure:
pure functions, no servers (tests/integration/test_alerting.py sends them to real ones)."""

from __future__ import annotations

import random

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from alerting.inputs import parse_anomaly
from alerting.mqtt_acks import MqttAcks
from alerting.outputs import alertmanager_alert, influx_line
from bench.alert_latency import prometheus_intervals, prometheus_quantile
from tests.dashboards import TWIN_DASHBOARD, alert_transition, load, queries

T = 1_764_547_200_000_000_000


def test_influx_line_carries_the_transition() -> None:
    line = influx_line(alert_transition("sim-1", T), "twin_alerts")
    assert line.startswith("twin_alerts,device=sim-1,fingerprint=0123456789abcdef,rule=temperature_high,")
    assert "state=firing" in line and 'datastream="sim-1:temperature"' in line
    assert "value=36" in line and "threshold=35" in line and line.endswith(f" {T}")
    assert "ends_ns" not in line


def test_alertmanager_alert_firing_and_resolved() -> None:
    firing = alertmanager_alert(alert_transition("sim-1", T), {"team": "lab"}, T, 60)
    assert firing["labels"] == {
        "team": "lab",
        "alertname": "temperature_high",
        "device": "sim-1",
        "datastream": "sim-1:temperature",
        "severity": "warning",
    }
    assert firing["startsAt"] == "2025-11-30T23:59:00.000Z"
    assert firing["endsAt"] == "2025-12-01T00:04:00.000Z"  # now + 4 × 60 s, as Prometheus sets it
    resolved = alert_transition("sim-1", T) | {"state": "resolved", "ends_ns": T}
    assert alertmanager_alert(resolved, {}, T + 10**12, 60)["endsAt"] == "2025-12-01T00:00:00.000Z"


@pytest.mark.parametrize(
    "payload",
    [b"", b"[]", b'{"v": 2}', b'{"v": 1, "device": "_probe", "value_name": "t", "time_ns": 1, "value": 1}',
     b'{"v": 1, "device": "d", "value_name": "t", "time_ns": 1.5, "value": 1}',
     b'{"v": 1, "device": "d", "value_name": "t", "time_ns": 1, "value": "x"}'],
)  # fmt: skip
def test_anomaly_events_that_do_not_parse_say_why(payload: bytes) -> None:
    with pytest.raises(ValueError):
        parse_anomaly(payload)


def test_anomaly_event_of_the_shared_interface() -> None:
    payload = (
        b'{"v": 1, "device": "sim-1", "datastream": "sim-1:temperature", "value_name": "temperature",'
        b' "time_ns": 5, "value": 0.0, "forecast": 25.0, "lower": 20.0, "upper": 30.0, "horizon_s": 1.0,'
        b' "coverage": 0.9, "model": "river.time_series.SNARIMAX"}'
    )
    assert parse_anomaly(payload) == ("sim-1", "temperature", 5, 0.0)


@given(st.floats(0.001, 0.999), st.floats(0.5, 60), st.floats(0.5, 60))
def test_prometheus_quantile_matches_the_sum_of_two_uniform_waits(q: float, a: float, b: float) -> None:
    x = prometheus_quantile(q, a, b)
    assert 0 <= x <= a + b
    assert prometheus_quantile(min(q + 0.001, 0.9999), a, b) >= x


def test_prometheus_quantile_against_sampling_and_the_shipped_config() -> None:
    rng = random.Random(1)
    samples = sorted(rng.uniform(0, 5) + rng.uniform(0, 5) for _ in range(200_000))
    assert prometheus_quantile(0.99, 5, 5) == pytest.approx(samples[int(0.99 * len(samples))], abs=0.05)
    assert prometheus_quantile(0.5, 5, 5) == pytest.approx(5.0)
    assert prometheus_intervals() == (5.0, 5.0)


def test_mqtt_acks_follow_pubacks_even_when_they_beat_publish_and_never_raise() -> None:
    """MQTTMessageInfo is paho's own (no broker needed: acknowledgements are fed by hand)."""
    acks = MqttAcks()
    queued = mqtt.MQTTMessageInfo(1)
    queued.rc = mqtt.MQTT_ERR_NO_CONN  # published while disconnected: paho keeps it queued
    full = mqtt.MQTTMessageInfo(2)
    full.rc = mqtt.MQTT_ERR_QUEUE_SIZE
    early = mqtt.MQTTMessageInfo(3)
    acks.acknowledged(3)  # the PUBACK of mid 3 arrived before publish() returned
    assert acks.sent(queued) and not acks.sent(full) and acks.sent(early)
    assert acks.wait(0.0) == 1 and acks.outstanding == 1
    acks.acknowledged(1)  # sent after reconnecting
    assert acks.outstanding == 0 and acks.wait(0.0) == 0


def test_the_dashboards_alert_table_and_annotation_follow_the_device_variable() -> None:
    """tests/integration/test_alerting.py runs them on the stage's points, for sim-1 and another."""
    shown = [q for q in queries(load(TWIN_DASHBOARD)) if '"twin_alerts"' in q.text]
    assert sorted(q.panel for q in shown) == ["Alerts", "annotation Alerts"]
    assert all('"device" =~ /^$device$/' in q.text for q in shown), shown
