"""The predictive_analysis stage's Prometheus metrics (served on /metrics; see README.md).

Labels stay few at 1,000 series: horizon (seconds), model (the configured model's name or a baseline),
observed_property (of model.observed_properties, "" for a value that has none). Per-series figures
go to InfluxDB (predictive.accuracy_measurement), not here.
"""

from prometheus_client import Counter, Gauge, Histogram

READINGS = Counter(
    "twinpipe_predictive_analysis_readings", "Sensor values taken in (one per value of an envelope)"
)
INVALID = Counter(
    "twinpipe_predictive_analysis_invalid_records",
    "Records that are not envelopes, skipped (the ingestion dead-letters them)",
)
OUT_OF_RANGE = Counter(
    "twinpipe_predictive_analysis_out_of_range",
    "Readings skipped, not learned nor judged, because outside their datastream's plausible range",
)
LATE = Counter(
    "twinpipe_predictive_analysis_late_readings",
    "Readings of a step already completed (late or re-delivered), not learned",
)
UPDATES = Counter("twinpipe_predictive_analysis_updates", "Completed steps learned by a series' model")
FILLED = Counter(
    "twinpipe_predictive_analysis_filled_steps", "Missing steps filled with the last value (short gaps)"
)
RESETS = Counter(
    "twinpipe_predictive_analysis_series_resets",
    "Series started over after a gap longer than a season (or 100 steps without one)",
)
WARMED = Counter(
    "twinpipe_predictive_analysis_warmup_steps", "Steps read back from InfluxDB to warm series up"
)
WARMUP_FAILURES = Counter(
    "twinpipe_predictive_analysis_warmup_failures", "Series started cold because InfluxDB could not be read"
)
SERIES = Gauge("twinpipe_predictive_analysis_series", "Series held (device, value)")
SERIES_REFUSED = Counter(
    "twinpipe_predictive_analysis_series_refused", "Readings of new series beyond predictive.max_series"
)
FORECASTS = Counter("twinpipe_predictive_analysis_forecasts", "Forecasts made", ["horizon"])
DROPPED = Counter(
    "twinpipe_predictive_analysis_forecasts_dropped",
    "Forecasts dropped before their actual came: a gap in the series, or predictive.max_pending",
)
INTERVALS = Counter(
    "twinpipe_predictive_analysis_intervals_judged",
    "Prediction intervals whose actual came",
    ["horizon", "observed_property"],
)
COVERED = Counter(
    "twinpipe_predictive_analysis_intervals_covered",
    "Prediction intervals that held their actual",
    ["horizon", "observed_property"],
)
COVERAGE = Gauge(
    "twinpipe_predictive_analysis_observed_coverage_ratio",
    "Share of intervals that held their actual, over every series held, since it was created",
    ["horizon", "observed_property"],
)
NOMINAL = Gauge("twinpipe_predictive_analysis_nominal_coverage_ratio", "predictive.coverage")
MAE = Gauge(
    "twinpipe_predictive_analysis_mae",
    "Mean absolute error over the recent windows, averaged over series (the series' unit)",
    ["horizon", "model", "observed_property"],
)
RMSE = Gauge(
    "twinpipe_predictive_analysis_rmse",
    "Root mean squared error over the recent windows, averaged over series (the series' unit)",
    ["horizon", "model", "observed_property"],
)
WORSE = Gauge(
    "twinpipe_predictive_analysis_series_worse_than_persistence",
    "Series whose model has a higher MAE than persistence over its recent window",
    ["horizon", "observed_property"],
)
ANOMALIES = Counter(
    "twinpipe_predictive_analysis_anomalies", "Readings outside their 1-step interval", ["observed_property"]
)
MODEL_FAILURES = Counter(
    "twinpipe_predictive_analysis_model_failures", "Model updates or forecasts that failed (model restarted)"
)
POINTS = Counter("twinpipe_predictive_analysis_points_written", "Points InfluxDB acknowledged")
REFUSED = Counter("twinpipe_predictive_analysis_points_refused", "Points InfluxDB refused (logged)")
RETRIES = Counter(
    "twinpipe_predictive_analysis_retries", "Failed attempts that will be retried", ["operation"]
)
DECOMPOSITIONS = Counter("twinpipe_predictive_analysis_decompositions", "STL decompositions written")
UPDATE_SECONDS = Histogram(
    "twinpipe_predictive_analysis_batch_seconds",
    "Time to process one polled batch of records (s)",
    buckets=(0.001, 0.005, 0.02, 0.1, 0.5, 2, 10),
)
