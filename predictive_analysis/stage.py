"""Telemetry from Kafka → per-series forecasts, intervals, accuracy and anomalies, in named steps.

Accumulate: each reading is judged against its series' 1-step interval (an anomaly event when
outside), added to the series' step (resample.py), and every completed step is learned and forecast
(forecaster.py); the lines for InfluxDB and the anomaly events collect in the batch. Flush: write
the lines (retried while InfluxDB is unavailable) and wait for Kafka to acknowledge the events.
Commit: the batch's offsets, only after both succeeded (at-least-once; re-processing a step writes
the same points again).

A series is created on its first reading and warmed up from the telemetry InfluxDB already holds
before that reading (history.py): a restart, or a replica taking over a partition, continues from
history instead of from nothing. Series of partitions revoked in a rebalance are dropped: whoever
gets the partition warms them up the same way.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from predictive_analysis import history, metrics
from predictive_analysis.conformal import ErrorWindow
from predictive_analysis.decompose import decompose, fill_gaps
from predictive_analysis.forecaster import MODEL, PERSISTENCE, SeriesForecaster, clip
from predictive_analysis.points import (
    SeriesTags,
    accuracy_line,
    anomaly_event,
    decomposition_lines,
    forecast_line,
)
from predictive_analysis.resample import Completed, Resampler
from twinpipe import retry
from twinpipe.backoff import Backoff
from twinpipe.clients import rebalance_listener
from twinpipe.config import Config, SeriesSettings
from twinpipe.envelope import EnvelopeError, decode
from twinpipe.health import Check, Heartbeat
from twinpipe.influx import Rejected, Unavailable
from twinpipe.model import TwinModel
from twinpipe.names import PROBE_DEVICE
from twinpipe.ratelog import ThrottledLog

log = logging.getLogger("predictive_analysis")
NO_SEASON_MAX_GAP = 100  # steps a series without a season may miss before it starts over
METRICS_INTERVAL_S = 10.0  # wall clock between recomputing the aggregated gauges
SHUTDOWN_TIMEOUT_S = 10.0  # how long a stopping stage still retries a batch's writes


@dataclass(slots=True)
class Series:
    tags: SeriesTags
    settings: SeriesSettings
    resampler: Resampler
    forecaster: SeriesForecaster
    partition: TopicPartition
    horizon_s: dict[int, float]  # horizon in steps → seconds
    reading_errors: ErrorWindow  # single readings against their step's 1-step forecast
    accuracy_due_ns: int = 0
    value_range: tuple[float, float] | None = None  # the datastream's plausible range (model)
    reading_q: float | None = None  # the anomaly interval's half-width for step reading_q_step
    reading_q_step: int | None = None
    anomaly_run: int = 0  # consecutive anomalies on one side: + above, − below the interval


@dataclass
class Batch:
    lines: list[str] = field(default_factory=list)
    events: list[tuple[bytes, bytes]] = field(default_factory=list)  # (key, value) for the anomaly topic
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)


class Predictive:
    def __init__(
        self,
        config: Config,
        consumer: KafkaConsumer | None,
        producer: KafkaProducer | None,
        write: Callable[[list[str]], None],
        rows: history.Rows | None,
    ) -> None:
        """`write`: lines to InfluxDB (raises Rejected / Unavailable); `rows`: InfluxQL → rows (raises
        Unavailable), None to start every series cold and skip decompositions."""
        self._config = config
        self._settings = config.predictive
        self._consumer = consumer
        self._producer = producer
        self._write = write
        self._rows = rows
        self._model = TwinModel(config.model)
        self.series: dict[tuple[str, str], Series] = {}
        self.heartbeat = Heartbeat(max_age_s=config.influxdb.timeout_s + self._settings.retry_max_s + 60)
        self._failing: dict[str, str] = {}
        self._throttled = ThrottledLog(log)
        self._metrics_at = 0.0
        self._decompose_queue: list[tuple[str, str]] = []
        self._decomposed_at: dict[tuple[str, str], float] = {}
        metrics.NOMINAL.set(self._settings.coverage)

    def ready_checks(self) -> dict[str, Check]:
        return {op: lambda o=op: self._failing.get(o, True) for op in ("write", "anomalies")}

    def listener(self) -> ConsumerRebalanceListener:
        return rebalance_listener(lambda revoked: self.drop_partitions(set(revoked)))

    def drop_partitions(self, revoked: set[TopicPartition]) -> None:
        gone = [key for key, series in self.series.items() if series.partition in revoked]
        for key in gone:
            del self.series[key]
        metrics.SERIES.set(len(self.series))
        if gone:
            log.info("partitions %s revoked: %d series dropped", sorted(map(str, revoked)), len(gone))

    # --- the loop ---

    def run(self, stop: threading.Event) -> None:
        assert self._consumer is not None
        settings = self._settings
        batch = Batch()
        while not stop.is_set():
            self.heartbeat.beat()
            polled = self._consumer.poll(timeout_ms=200, max_records=settings.max_poll_records)
            started = time.perf_counter()
            for records in polled.values():
                for record in records:
                    partition = TopicPartition(record.topic, record.partition)
                    batch.offsets[partition] = record.offset + 1
                    self.accumulate(batch, record.value or b"", partition, record.timestamp)
            if polled:
                metrics.UPDATE_SECONDS.observe(time.perf_counter() - started)
            due = time.monotonic() - batch.started >= settings.flush_interval_s
            if len(batch.lines) >= settings.batch_size or (due and (batch.offsets or batch.lines)):
                if not self.flush_and_commit(batch, stop):
                    return
                batch = Batch()
                self.decompose_due(batch)
            elif due:
                batch.started = time.monotonic()
                self.decompose_due(batch)
            if time.monotonic() - self._metrics_at >= METRICS_INTERVAL_S:
                self.export_metrics()
        self.flush_and_commit(batch, stop)
        self.export_metrics()

    # --- step 1: accumulate ---

    def accumulate(
        self, batch: Batch, payload: bytes, partition: TopicPartition, _timestamp_ms: int = 0
    ) -> None:
        try:
            envelope = decode(payload)
        except EnvelopeError:
            metrics.INVALID.inc()
            return
        if envelope.device == PROBE_DEVICE:
            return
        metrics.READINGS.inc(len(envelope.values))
        for name, value in envelope.values.items():
            series = self.series.get((envelope.device, name))
            if series is None:
                series = self._new_series(batch, envelope.device, name, envelope.time_ns, partition)
                if series is None:
                    continue
            self.reading(batch, series, envelope.time_ns, value)

    def reading(self, batch: Batch, series: Series, time_ns: int, value: float) -> None:
        """One reading: judged against its step's 1-step forecast, then added to the step.

        A reading outside the datastream's plausible range is skipped and counted (the publisher
        drops those too; one from elsewhere must not be learned). The anomaly interval is
        split-conformal over the recent errors of single readings against their step's 1-step
        forecast (not of step means: at 1 reading/s a reading is noisier than its 60 s mean); the
        window gets the real, unclipped error, so q̂ can grow. An anomalous reading is learned
        robustly: clipped to the nearer bound before it enters the step's mean, so a spike does not
        drag the model; from the `anomaly_accept_after`-th consecutive anomaly on the same side on,
        readings are learned unclipped (a level shift), until one falls inside its interval."""
        limits = series.value_range
        if limits is not None and not limits[0] <= value <= limits[1]:
            metrics.OUT_OF_RANGE.inc()
            return
        resampler = series.resampler
        step = resampler.step_of(time_ns)
        if resampler.current is not None and step > resampler.current:
            completed = resampler.flush()  # the step before is complete: learn it, forecast this one
            if completed is not None:
                self.learn(batch, series, completed)
        elif resampler.current is not None and step < resampler.current:
            metrics.LATE.inc()
            return
        forecaster = series.forecaster
        expected = forecaster.next_interval(step)
        if expected is not None:
            if series.reading_q_step != step:
                series.reading_q_step = step
                series.reading_q = series.reading_errors.quantile(self._settings.anomaly_coverage)
            q = series.reading_q
            error = value - expected.value
            if q is not None and abs(error) > q:
                # within the plausible range, like the forecast bounds (the reading is inside it)
                lower, upper = clip(expected.value - q, limits), clip(expected.value + q, limits)
                same_side = (series.anomaly_run > 0) == (error > 0)
                series.anomaly_run = (abs(series.anomaly_run) + 1 if same_side else 1) * (
                    1 if error > 0 else -1
                )
                prop = series.tags.observed_property or ""
                metrics.ANOMALIES.labels(prop).inc()
                event = anomaly_event(
                    series.tags,
                    time_ns,
                    value,
                    expected.value,
                    lower,
                    upper,
                    series.settings.step_s,
                    self._settings.anomaly_coverage,
                    series.settings.model,
                )
                batch.events.append((series.tags.device.encode(), event))
                if abs(series.anomaly_run) < self._settings.anomaly_accept_after:
                    value = min(max(value, lower), upper)
            else:
                series.anomaly_run = 0
            series.reading_errors.add(error)
        resampler.add(time_ns, value)  # completes nothing: the step before was flushed above

    def learn(self, batch: Batch, series: Series, completed: Completed, warm_up: int | None = None) -> None:
        """`warm_up`: the step from which a warm-up forecasts (to refill the error windows); its
        forecasts are not written (InfluxDB has them from the run that made them first)."""
        forecaster = series.forecaster
        last = forecaster.last_step
        if last is not None and completed.step > last + 1:
            gap = completed.step - last - 1
            if gap > (forecaster.season or NO_SEASON_MAX_GAP):
                metrics.RESETS.inc()
                metrics.DROPPED.inc(forecaster.pending_count())  # their target steps never came
                series.forecaster = forecaster = SeriesForecaster(
                    series.settings, self._settings.coverage, self._settings.error_window, series.value_range
                )
            else:
                filler = forecaster.history[-1]
                metrics.FILLED.inc(gap)
                for missing in range(last + 1, completed.step):
                    self._observe(batch, series, missing, filler, warm_up)
        self._observe(batch, series, completed.step, completed.mean, warm_up)

    def _observe(self, batch: Batch, series: Series, step: int, value: float, warm_up: int | None) -> None:
        forecaster = series.forecaster
        dropped, failures = forecaster.dropped, forecaster.model_failures
        judged, made = forecaster.observe(step, value, forecast=warm_up is None or step >= warm_up)
        metrics.UPDATES.inc()
        prop = series.tags.observed_property or ""
        for item in judged:
            if item.covered is not None:
                horizon = f"{series.horizon_s[item.forecast.horizon_steps]:g}"
                metrics.INTERVALS.labels(horizon, prop).inc()
                if item.covered:
                    metrics.COVERED.labels(horizon, prop).inc()
        step_ns = series.resampler.step_ns
        measurement = self._settings.forecast_measurement
        for forecast in made if warm_up is None else ():
            horizon_s = series.horizon_s[forecast.horizon_steps]
            batch.lines.append(forecast_line(measurement, series.tags, forecast, step_ns, horizon_s))
            metrics.FORECASTS.labels(f"{horizon_s:g}").inc()
        excess = forecaster.pending_count() - self._settings.max_pending
        if excess > 0:
            forecaster.drop_oldest(excess)
        metrics.DROPPED.inc(forecaster.dropped - dropped)
        metrics.MODEL_FAILURES.inc(forecaster.model_failures - failures)
        time_ns = step * step_ns
        if time_ns >= series.accuracy_due_ns:
            lines = self.accuracy_lines(series, time_ns)
            if lines:  # none before the first forecast met its actual: try again next step
                series.accuracy_due_ns = time_ns + int(self._settings.accuracy_interval_s * 1e9)
                batch.lines += lines

    def accuracy_lines(self, series: Series, time_ns: int) -> list[str]:
        forecaster = series.forecaster
        lines = []
        for (horizon, name), window in forecaster.errors.items():
            if not len(window):
                continue
            label = series.settings.model if name == MODEL else name
            coverage = forecaster.covered[horizon].observed() if name == MODEL else None
            lines.append(
                accuracy_line(
                    self._settings.accuracy_measurement,
                    series.tags,
                    time_ns,
                    series.horizon_s[horizon],
                    label,
                    window.mae() or 0.0,
                    window.rmse() or 0.0,
                    len(window),
                    coverage,
                )
            )
        return lines

    def _new_series(
        self, batch: Batch, device: str, value: str, time_ns: int, partition: TopicPartition
    ) -> Series | None:
        if len(self.series) >= self._settings.max_series:
            metrics.SERIES_REFUSED.inc()
            self._throttled.warning(
                "max-series", "predictive.max_series (%d) reached", self._settings.max_series
            )
            return None
        thing = self._model.thing(device)
        prop = self._model.property_of(value)
        stream = self._model.datastream(device, value)
        if stream is not None:
            prop = stream.observed_property_id
        settings = self._settings.settings_for(prop, thing.entry if thing else None)
        value_range = stream.range if stream is not None else None
        forecaster = SeriesForecaster(
            settings, self._settings.coverage, self._settings.error_window, value_range
        )
        horizon_s = {h: h * settings.step_s for h in forecaster.horizons}
        series = Series(
            SeriesTags(device, value, thing.entry if thing else None, prop),
            settings,
            Resampler(int(settings.step_s * 1e9)),
            forecaster,
            partition,
            horizon_s,
            ErrorWindow(self._settings.error_window),
            value_range=value_range,
        )
        self.series[device, value] = series
        metrics.SERIES.set(len(self.series))
        metrics.ANOMALIES.labels(prop or "")  # the counter exists at 0 before the first anomaly
        self.warm_up(batch, series, time_ns)
        return series

    def warm_up(self, batch: Batch, series: Series, time_ns: int) -> None:
        """Learns the steps InfluxDB holds before the step of `time_ns`: warmup_seasons seasons (and
        the model's order) only learned, then error_window plus the longest horizon steps also
        forecast and judged, so the interval windows are full again. Forecasts are not written again."""
        if self._rows is None:
            return
        self.heartbeat.beat()  # a warm-up takes ≈ 0.2 s per live series; many may come in one poll
        settings = series.settings
        step_ns = series.resampler.step_ns
        first_step = time_ns // step_ns
        forecaster = series.forecaster
        refill = self._settings.error_window + forecaster.horizons[-1]  # forecasts that refill the windows
        learn_only = round(self._settings.warmup_seasons * forecaster.season) + sum(settings.order) + 1
        steps = learn_only + refill
        query = history.step_means_query(
            self._settings.telemetry_measurement,
            series.tags.device,
            series.tags.value,
            settings.step_s,
            (first_step - steps) * step_ns,
            first_step * step_ns,
        )
        try:
            known = history.step_means(self._rows, query, step_ns)
        except Unavailable as exc:
            metrics.WARMUP_FAILURES.inc()
            self._throttled.warning(
                "warm-up", "series %s:%s starts cold: %s", series.tags.device, series.tags.value, exc
            )
            return
        forecast_from = first_step - refill
        for step, mean in known:
            self.learn(batch, series, Completed(step, mean, 1), warm_up=forecast_from)
        metrics.WARMED.inc(len(known))
        if known:
            log.debug("%s:%s warmed up with %d steps", series.tags.device, series.tags.value, len(known))

    # --- decomposition ---

    def decompose_due(self, batch: Batch) -> None:
        """At most one series per call: its STL over `decomposition.seasons` seasons read back."""
        interval = self._settings.decomposition.interval_s
        if not interval or self._rows is None:
            return
        if not self._decompose_queue:
            now = time.monotonic()
            self._decompose_queue = [
                key
                for key, series in self.series.items()
                if series.forecaster.season >= 2 and now - self._decomposed_at.get(key, -1e18) >= interval
            ]
            if not self._decompose_queue:
                return
        key = self._decompose_queue.pop()
        series = self.series.get(key)
        if series is None or series.forecaster.last_step is None:
            return
        self._decomposed_at[key] = time.monotonic()
        step_ns = series.resampler.step_ns
        period = series.forecaster.season
        end = series.forecaster.last_step + 1
        query = history.step_means_query(
            self._settings.telemetry_measurement,
            series.tags.device,
            series.tags.value,
            series.settings.step_s,
            (end - period * self._settings.decomposition.seasons) * step_ns,
            end * step_ns,
        )
        try:
            steps, values = fill_gaps(history.step_means(self._rows, query, step_ns))
        except Unavailable as exc:
            self._throttled.warning("decompose", "decomposition of %s skipped: %s", key, exc)
            return
        parts = decompose(values, period)
        if parts is None:
            return
        times = [step * step_ns for step in steps]
        batch.lines += decomposition_lines(
            self._settings.decomposition_measurement, series.tags, times, *parts
        )
        metrics.DECOMPOSITIONS.inc()

    # --- step 2 and 3: flush, commit ---

    def flush_and_commit(self, batch: Batch, stop: threading.Event) -> bool:
        """False when stopped before the batch was written (nothing committed)."""
        if batch.lines and not self._retry(lambda: self._write_lines(batch), "write", stop):
            return False
        if batch.events and not self._retry(lambda: self._send_events(batch), "anomalies", stop):
            return False
        if batch.offsets and self._consumer is not None:
            try:
                self._consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in batch.offsets.items()})
            except (CommitFailedError, KafkaError) as exc:
                self._throttled.warning(
                    "commit", "offset commit failed (records will be re-processed): %s", exc
                )
        return True

    def _write_lines(self, batch: Batch) -> None:
        """In requests of at most batch_size lines; what was written leaves the batch, so a retry
        resumes where the outage began."""
        size = self._settings.batch_size
        while batch.lines:
            chunk = batch.lines[:size]
            try:
                self._write(chunk)
            except Rejected as exc:
                metrics.REFUSED.inc(len(chunk))
                self._throttled.warning("refused", "InfluxDB refused %d points: %s", len(chunk), exc)
            except Unavailable as exc:
                self._throttled.warning("write", "InfluxDB write failed, retrying: %s", exc)
                raise
            else:
                metrics.POINTS.inc(len(chunk))
            del batch.lines[:size]

    def _send_events(self, batch: Batch) -> None:
        assert self._producer is not None
        topic = self._settings.anomaly_topic
        futures = [(item, self._producer.send(topic, key=item[0], value=item[1])) for item in batch.events]
        failed = []
        for item, future in futures:
            try:
                future.get(timeout=self._config.influxdb.timeout_s)
            except KafkaError:
                failed.append(item)
        batch.events = failed
        if failed:
            raise KafkaError(f"{len(failed)} anomaly events not acknowledged by Kafka")

    def _retry(self, attempt: Callable[[], None], operation: str, stop: threading.Event) -> bool:
        def failed(exc: BaseException, delay_s: float) -> None:
            self._failing[operation] = f"{operation} failing, retried: {exc}"
            metrics.RETRIES.labels(operation).inc()
            self.heartbeat.beat()

        backoff = Backoff(self._settings.retry_initial_s, self._settings.retry_max_s)
        if retry.until_done(attempt, (Unavailable, KafkaError), stop, backoff, failed, SHUTDOWN_TIMEOUT_S):
            self._failing.pop(operation, None)
            return True
        log.warning("stopping with %s still failing; the batch's offsets stay uncommitted", operation)
        return False

    # --- metrics ---

    def export_metrics(self) -> None:
        """Aggregates per (horizon, model, observed property): the mean of the series' windows."""
        self._metrics_at = time.monotonic()
        mae: dict[tuple[str, str, str], list[float]] = defaultdict(list)
        rmse: dict[tuple[str, str, str], list[float]] = defaultdict(list)
        covered: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        worse: dict[tuple[str, str], int] = defaultdict(int)
        for series in self.series.values():
            prop = series.tags.observed_property or ""
            forecaster = series.forecaster
            for (horizon, name), window in forecaster.errors.items():
                if not len(window):
                    continue
                label = series.settings.model if name == MODEL else name
                key = (f"{series.horizon_s[horizon]:g}", label, prop)
                mae[key].append(window.mae() or 0.0)
                rmse[key].append(window.rmse() or 0.0)
            for horizon, coverage in forecaster.covered.items():
                pair = covered[f"{series.horizon_s[horizon]:g}", prop]
                pair[0] += coverage.covered
                pair[1] += coverage.total
                model_mae = forecaster.errors[horizon, MODEL].mae()
                persistence_mae = forecaster.errors[horizon, PERSISTENCE].mae()
                if model_mae is not None and persistence_mae is not None and model_mae > persistence_mae:
                    worse[f"{series.horizon_s[horizon]:g}", prop] += 1
        for key, values in mae.items():
            metrics.MAE.labels(*key).set(sum(values) / len(values))
            metrics.RMSE.labels(*key).set(sum(rmse[key]) / len(rmse[key]))
        for (horizon, prop), (hits, total) in covered.items():
            if total:
                metrics.COVERAGE.labels(horizon, prop).set(hits / total)
            metrics.WORSE.labels(horizon, prop).set(worse.get((horizon, prop), 0))
