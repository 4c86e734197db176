"""The latency probe's Prometheus metrics (served on /metrics; see README.md)."""

from prometheus_client import Counter, Gauge, Histogram

from twinpipe.trace import LATENCY_BUCKETS

HOP_DELAY = Histogram(
    "twinpipe_latency_probe_hop_delay_seconds",
    "Delay of each hop from the envelope trace: read_to_publish, publish_to_bridge, bridge_to_kafka, "
    "kafka_to_probe, and read_to_probe for the whole way into Kafka",
    ["hop", "device"],
    buckets=LATENCY_BUCKETS,
)
CLOCK_ANOMALIES = Counter(
    "twinpipe_latency_probe_clock_anomalies",
    "Hop delays left out of the histograms because the clocks disagree (kind: negative, absurd)",
    ["hop", "kind"],
)
RECORDS = Counter("twinpipe_latency_probe_records", "Telemetry records read from Kafka")
REPLAYED = Counter(
    "twinpipe_latency_probe_replayed_records",
    "Replayed readings (envelope origin=replay) read from Kafka; left out of the hop delays",
)
INVALID = Counter("twinpipe_latency_probe_invalid_records", "Records that are not envelopes (skipped)")
LAST_SEEN = Gauge(
    "twinpipe_latency_probe_device_last_seen_timestamp_seconds",
    "Event time of the newest reading read from Kafka, per device (labelled as on the delays)",
    ["device"],
)
PROBES_SENT = Counter("twinpipe_latency_probe_probes_sent", "Probe readings published to MQTT")
PROBE_DELAY = Histogram(
    "twinpipe_latency_probe_probe_delay_seconds",
    "Probe published → read back from Kafka (at=kafka) / visible in an InfluxDB query (at=influxdb)",
    ["at"],
    buckets=LATENCY_BUCKETS,
)
PROBES_LOST = Counter(
    "twinpipe_latency_probe_probes_lost",
    "Probes not seen at a stage within latency_probe.probe_timeout_s (at: kafka, influxdb)",
    ["at"],
)
ERRORS = Counter(
    "twinpipe_latency_probe_errors",
    "Errors by kind: influx_query (looking for probes), summary_write (p50/p95/p99 to InfluxDB), publish",
    ["kind"],
)
LAG = Gauge(
    "twinpipe_latency_probe_consumer_lag_records",
    "Records behind: the fetch high watermark minus the read position, summed over partitions",
)
MQTT_CONNECTED = Gauge("twinpipe_latency_probe_mqtt_connected", "1 while connected to the MQTT broker")

# Series that exist from the start, so dashboards and alerts see zeros instead of nothing.
TRACE_HOPS = ("read_to_publish", "publish_to_bridge", "bridge_to_kafka", "kafka_to_probe", "read_to_probe")
for hop in TRACE_HOPS:
    for kind in ("negative", "absurd"):
        CLOCK_ANOMALIES.labels(hop, kind)
for stage in ("kafka", "influxdb"):
    PROBES_LOST.labels(stage)
for kind in ("influx_query", "summary_write", "publish"):
    ERRORS.labels(kind)
