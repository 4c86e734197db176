"""The alerting stage's Prometheus metrics (served on /metrics; see README.md).

Labels are bounded: rule ids and severities come from config.yaml, states are a fixed set; devices
and datastreams are never labels (the alert itself is in the transition event and in InfluxDB)."""

from prometheus_client import Counter, Gauge, Histogram

from twinpipe.trace import LATENCY_BUCKETS

READINGS = Counter("twinpipe_alerting_readings", "Telemetry envelopes evaluated")
ANOMALIES = Counter("twinpipe_alerting_anomaly_events", "Anomaly events (alerting.anomaly_topic) evaluated")
SKIPPED = Counter(
    "twinpipe_alerting_records_skipped",
    "Records not evaluated, by reason: invalid (not an envelope or anomaly event; the ingestion"
    " dead-letters telemetry of this kind), probe (latency probe readings), implausible_time (event"
    " time outside the ingestion's window; the ingestion dead-letters these too), unmodelled (the"
    " device matches no model.things entry, so no rule applies)",
    ["reason"],
)
VALUES_SKIPPED = Counter(
    "twinpipe_alerting_values_skipped",
    "Values of evaluated readings not judged, by reason: out_of_range (outside the datastream's"
    " plausible range in the model; the publisher skips these too)",
    ["reason"],
)
TRANSITIONS = Counter(
    "twinpipe_alerting_transitions",
    "Alert transitions published, by state: pending, firing, resolved, ok (a pending alert ended)",
    ["state"],
)
ALERTS = Gauge(
    "twinpipe_alerting_alerts",
    "Alerts currently pending or firing, by rule, severity and state (like Prometheus' ALERTS)",
    ["rule", "severity", "state"],
)
DELAY = Histogram(
    "twinpipe_alerting_transition_delay_seconds",
    "Event time of the reading → its transition handed to Kafka and MQTT (event-time rules)",
    buckets=LATENCY_BUCKETS,
)
RESTORED = Counter(
    "twinpipe_alerting_states_restored",
    "Device state documents read back from alerting.state_topic on assignment (start, rebalance)",
)
INFLUX_WRITTEN = Counter("twinpipe_alerting_influx_points_written", "Transition points InfluxDB acknowledged")
INFLUX_DROPPED = Counter(
    "twinpipe_alerting_influx_points_dropped",
    "Transition points not stored, by reason: overflow (alerting.max_pending_points), rejected (by InfluxDB)",
    ["reason"],
)
ALERTMANAGER = Counter(
    "twinpipe_alerting_alertmanager_requests",
    "POST /api/v2/alerts requests to Alertmanager, by result: ok, error (retried)",
    ["result"],
)
MQTT_UNACKED = Counter(
    "twinpipe_alerting_mqtt_unacknowledged",
    "Transitions MQTT had not acknowledged when offsets were committed (still queued in the client)",
)
MQTT_DROPPED = Counter(
    "twinpipe_alerting_mqtt_dropped",
    "Transitions not queued for MQTT because alerting.max_queued_mqtt were waiting (Kafka has them)",
)
COMMIT_FAILURES = Counter("twinpipe_alerting_commit_failures", "Offset commits that failed (re-delivery)")

for reason in ("invalid", "probe", "implausible_time", "unmodelled"):
    SKIPPED.labels(reason)
VALUES_SKIPPED.labels("out_of_range")
for state in ("pending", "firing", "resolved", "ok"):
    TRANSITIONS.labels(state)
for reason in ("overflow", "rejected"):
    INFLUX_DROPPED.labels(reason)
for result in ("ok", "error"):
    ALERTMANAGER.labels(result)
