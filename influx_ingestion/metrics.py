"""The ingestion's Prometheus metrics (served on /metrics; see README.md)."""

from prometheus_client import Counter, Gauge, Histogram

from twinpipe.trace import LATENCY_BUCKETS

CONSUMED = Counter("twinpipe_ingestion_records_consumed", "Kafka records taken into a batch")
CONSUMED_BYTES = Counter("twinpipe_ingestion_bytes_consumed", "Kafka record value bytes taken in")
WRITTEN = Counter("twinpipe_ingestion_points_written", "Points InfluxDB acknowledged")
DEAD_LETTERS = Counter(
    "twinpipe_ingestion_dead_letters",
    "Records sent to the dead-letter topic, by kind: invalid (not an envelope, or names that cannot be"
    " stored), implausible_time (event time outside the window), out_of_range (a value outside its"
    " datastream's plausible range in the model), beyond_retention (older than the"
    " bucket's retention: set aside before writing, or dropped by InfluxDB), rejected (by InfluxDB)",
    ["kind"],
)
UNKNOWN_KEYS = Counter(
    "twinpipe_ingestion_envelopes_with_unknown_keys",
    "Envelopes carrying top-level keys this version does not know (ignored; forward compatibility)",
)
OVERWRITES = Counter(
    "twinpipe_ingestion_points_overwritten",
    "Points with the device and event time of a different recent reading (another boot or seq):"
    " one point in InfluxDB, the later write wins",
)
LOCATIONS_WRITTEN = Counter(
    "twinpipe_ingestion_location_points_written",
    "Location points (ingestion.location_measurement) InfluxDB acknowledged",
)
LOCATIONS_REFUSED = Counter(
    "twinpipe_ingestion_location_points_refused",
    "Location points not stored: refused by InfluxDB, or older than the retention (logged)",
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
WRITE_REQUESTS = Counter(
    "twinpipe_ingestion_write_requests",
    "InfluxDB write requests made, including those that isolate refused points",
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
    "Delays left out of the histograms, by delay (write, end_to_end) and kind: negative (clocks"
    " disagree) or absurd (above ingestion.max_plausible_delay_s: a backlog, a replay or a wrong clock)",
    ["delay", "kind"],
)
REPLAYED_POINTS = Counter(
    "twinpipe_ingestion_replayed_points",
    "Points written from replayed readings (envelope origin=replay, tag origin=replay); left out of the"
    " write and end-to-end delay histograms",
)
LAG = Gauge(
    "twinpipe_ingestion_consumer_lag_records",
    "Records behind: the fetch high watermark minus the committed offset, summed over partitions",
)

DEAD_LETTER_KINDS = ("invalid", "implausible_time", "out_of_range", "beyond_retention", "rejected")
for kind in DEAD_LETTER_KINDS:
    DEAD_LETTERS.labels(kind)
for delay in ("write", "end_to_end"):
    for kind in ("negative", "absurd"):
        CLOCK_ANOMALIES.labels(delay, kind)
for operation in ("write", "dead_letters"):
    RETRIES.labels(operation)
