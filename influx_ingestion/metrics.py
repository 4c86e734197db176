"""The ingestion's Prometheus metrics (served on /metrics; see README.md)."""

from prometheus_client import Counter, Gauge, Histogram

from twinpipe.trace import LATENCY_BUCKETS

CONSUMED = Counter("twinpipe_ingestion_records_consumed", "Kafka records taken into a batch")
CONSUMED_BYTES = Counter("twinpipe_ingestion_bytes_consumed", "Kafka record value bytes taken in")
WRITTEN = Counter("twinpipe_ingestion_points_written", "Points InfluxDB acknowledged")
DEAD_LETTERS = Counter(
    "twinpipe_ingestion_dead_letters",
    "Records sent to the dead-letter topic, by kind: invalid (not an envelope), rejected (by InfluxDB)",
    ["kind"],
)
RETRIES = Counter(
    "twinpipe_ingestion_retries",
    "Failed attempts that will be retried, by operation: write, dead_letters",
    ["operation"],
)
COMMIT_FAILURES = Counter("twinpipe_ingestion_commit_failures", "Offset commits that failed (re-delivery)")
BATCH_SIZE = Histogram(
    "twinpipe_ingestion_batch_size_points",
    "Points per InfluxDB write",
    buckets=(1, 10, 50, 100, 500, 1000, 2000, 5000, 10000, 20000),
)
WRITE_DURATION = Histogram(
    "twinpipe_ingestion_write_duration_seconds",
    "Duration of one InfluxDB write request",
    buckets=LATENCY_BUCKETS,
)
WRITE_DELAY = Histogram(
    "twinpipe_ingestion_write_delay_seconds",
    "Per point (up to 100 evenly spaced per batch), the record's Kafka timestamp → InfluxDB acknowledged"
    " the write (hop kafka_to_influxdb)",
    buckets=LATENCY_BUCKETS,
)
END_TO_END_DELAY = Histogram(
    "twinpipe_ingestion_end_to_end_delay_seconds",
    "Per point (up to 100 evenly spaced per batch), the board read (event time) → InfluxDB acknowledged"
    " the write: the whole pipeline",
    buckets=LATENCY_BUCKETS,
)
CLOCK_ANOMALIES = Counter(
    "twinpipe_ingestion_clock_anomalies",
    "Write delays left out of the histogram because they were negative (clocks disagree)",
)
LAG = Gauge(
    "twinpipe_ingestion_consumer_lag_records",
    "Records behind: the fetch high watermark minus the committed offset, summed over partitions",
)

for kind in ("invalid", "rejected"):
    DEAD_LETTERS.labels(kind)
for operation in ("write", "dead_letters"):
    RETRIES.labels(operation)
