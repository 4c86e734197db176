"""`predictive:` — the predictive_analysis stage: resampling step, model, horizons, intervals, outputs.

A series (one value of one device) is forecast with the settings of `predictive.series`: the
defaults, overridden by its observed property's entry in `by_property`, then by its thing's entry in
`by_thing` (a thing of `model.things`). See predictive_analysis/README.md for every key.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationError, model_validator

from twinpipe.config.common import KafkaTopic, Measurement, Positive, Section

Model = Literal["snarimax", "holt_winters"]


class SeriesSettings(Section):
    """How one series is resampled and forecast. Every time is in seconds of event time."""

    step_s: Annotated[float, Field(ge=1, le=86400)] = 60.0
    horizons_s: Annotated[list[Positive], Field(min_length=1, max_length=8)] = [60.0, 600.0, 3600.0]
    season_s: Annotated[float, Field(ge=0)] = 86400.0  # 0: no seasonality
    model: Model = "snarimax"
    # SNARIMAX orders (river.time_series.SNARIMAX): p, d, q and the seasonal sp, sd, sq.
    order: tuple[int, int, int] = (1, 0, 0)
    seasonal_order: tuple[int, int, int] = (1, 1, 1)
    # Holt-Winters smoothing (river.time_series.HoltWinters).
    alpha: Annotated[float, Field(gt=0, le=1)] = 0.5
    beta: Annotated[float, Field(gt=0, le=1)] = 0.001
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.1

    @model_validator(mode="after")
    def _whole_steps(self) -> SeriesSettings:
        for key, value in [("season_s", self.season_s), *(("horizons_s", h) for h in self.horizons_s)]:
            if value % self.step_s:
                raise ValueError(f"{key}: {value} s is not a whole number of step_s ({self.step_s} s)")
        if self.season_s and self.season_s / self.step_s < 2:
            raise ValueError(f"season_s: {self.season_s} s must span at least 2 steps of {self.step_s} s")
        if self.season_s / self.step_s > 10080:
            raise ValueError(
                f"season_s: {self.season_s} s is {self.season_s / self.step_s:.0f} steps of {self.step_s} s;"
                " at most 10080 (raise step_s)"
            )
        if len(set(self.horizons_s)) != len(self.horizons_s):
            raise ValueError(f"horizons_s: {self.horizons_s} repeats a horizon")
        return self

    def steps(self, seconds: float) -> int:
        return round(seconds / self.step_s)


class SeriesOverride(Section):
    """Any subset of SeriesSettings' keys."""

    step_s: Annotated[float, Field(ge=1, le=86400)] | None = None
    horizons_s: Annotated[list[Positive], Field(min_length=1, max_length=8)] | None = None
    season_s: Annotated[float, Field(ge=0)] | None = None
    model: Model | None = None
    order: tuple[int, int, int] | None = None
    seasonal_order: tuple[int, int, int] | None = None
    alpha: Annotated[float, Field(gt=0, le=1)] | None = None
    beta: Annotated[float, Field(gt=0, le=1)] | None = None
    gamma: Annotated[float, Field(gt=0, le=1)] | None = None


class DecompositionConfig(Section):
    interval_s: Annotated[float, Field(ge=0)] = 3600.0  # wall clock between decompositions; 0: off
    seasons: Annotated[int, Field(ge=2, le=60)] = 7  # window read back from InfluxDB, in seasons


class PredictiveConfig(Section):
    group_id: str = "twinpipe-predictive"
    topics: Annotated[list[KafkaTopic], Field(min_length=1)] | None = None  # null = [kafka.telemetry_topic]
    anomaly_topic: KafkaTopic = "twin.anomalies"
    coverage: Annotated[float, Field(gt=0.5, lt=1)] = 0.9
    # Nominal coverage of the interval a single reading is judged by: outside it is an anomaly.
    anomaly_coverage: Annotated[float, Field(gt=0.5, lt=1)] = 0.99
    error_window: Annotated[int, Field(ge=10, le=100000)] = 500
    # A new series first learns its history from InfluxDB: this many seasons, then error_window plus
    # its longest horizon steps that are also forecast, to refill the error windows.
    warmup_seasons: Annotated[float, Field(ge=0, le=60)] = 1.0
    # From this many consecutive anomalies on the same side of the interval on, readings are learned
    # unclipped (a level shift is accepted); fewer (a spike) are clipped to the nearer bound.
    anomaly_accept_after: Annotated[int, Field(ge=1)] = 5
    # Forecasts awaiting their actual, per series; past it the oldest are dropped and counted.
    max_pending: Annotated[int, Field(ge=1)] = 20000
    max_series: Annotated[int, Field(ge=1)] = 100000
    forecast_measurement: Measurement = "twin_forecast"
    accuracy_measurement: Measurement = "twin_forecast_accuracy"
    decomposition_measurement: Measurement = "twin_decomposition"
    telemetry_measurement: Measurement = "telemetry"  # where the ingestion writes readings (warm-up, STL)
    accuracy_interval_s: Positive = 3600.0  # event time between a series' accuracy points
    flush_interval_s: Positive = 1.0  # wall clock between batched writes and offset commits
    batch_size: Annotated[int, Field(ge=1)] = 5000  # lines per InfluxDB write request
    # records per Kafka poll: a step completing writes ~4 lines per horizon and series, so keep it small
    max_poll_records: Annotated[int, Field(ge=1)] = 500
    retry_initial_s: Positive = 0.5
    retry_max_s: Positive = 10.0
    series: SeriesSettings = SeriesSettings()
    by_property: dict[str, SeriesOverride] = {}
    by_thing: dict[str, SeriesOverride] = {
        # the simulator's random walk has no season; short steps so the demo shows forecasts in minutes
        # Holt-Winters: SNARIMAX's SGD diverged on its flat 1 Hz noise (see the README)
        "simulated": SeriesOverride(step_s=10, horizons_s=[10, 60, 300], season_s=0, model="holt_winters"),
        "greensboro": SeriesOverride(step_s=3600, horizons_s=[3600, 21600, 86400]),
        "sand-point": SeriesOverride(step_s=3600, horizons_s=[3600, 21600, 86400]),
    }
    decomposition: DecompositionConfig = DecompositionConfig()

    @model_validator(mode="after")
    def _overrides_valid(self) -> PredictiveConfig:
        for where, overrides in (("by_property", self.by_property), ("by_thing", self.by_thing)):
            for key in overrides:
                prop, thing = (key, None) if where == "by_property" else (None, key)
                try:
                    self.settings_for(prop, thing)
                except ValidationError as exc:  # one line per error, named by its full key path
                    raise ValueError(
                        "; ".join(
                            ".".join([where, key, *map(str, e["loc"])])
                            + f": {e['msg'].removeprefix('Value error, ')}"
                            for e in exc.errors()
                        )
                    ) from None
        return self

    def settings_for(self, observed_property: str | None, thing: str | None) -> SeriesSettings:
        """The defaults, overridden by the property's entry, then the thing's. Raises ValueError."""
        merged = self.series.model_dump()
        for override in (self.by_property.get(observed_property or ""), self.by_thing.get(thing or "")):
            if override is not None:
                merged |= override.model_dump(exclude_none=True)
        return SeriesSettings(**merged)
