"""One series' forecasting: its online model, the two baselines, intervals, and their evaluation.

Fed one completed step at a time (`observe`), a SeriesForecaster
1. judges the forecasts made earlier for this step (error windows per horizon and forecaster,
   the interval's coverage),
2. learns the step (river's `learn_one`), and
3. forecasts every horizon (river's `forecast(horizon)`), with a split-conformal interval from the
   model's recent errors at that horizon (conformal.py), and the baselines' forecasts beside it.

Baselines (Hyndman & Athanasopoulos, "Forecasting: Principles and Practice", 3rd ed., §5.2):
persistence (the naive method: the last step's value) and seasonal naive (the value one season
before the target step; persistence when the series has no season). Pure: no I/O.

A model can diverge (river's SGD-trained SNARIMAX on a flat or constant input did: forecasts of
±1e30 after minutes). A forecast path that leaves the envelope of the recent steps (`envelope`) is
never used. When it is not finite, or the model has learned RECENT_STEPS steps past ready(), that
is a model failure: the model starts over (a younger model is given time: river's regressors start
from 0, so a fresh SNARIMAX forecasts near 0 at first).
Forecasts and bounds are clipped to the datastream's plausible range when it has one.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from river import linear_model, optim, preprocessing
from river import time_series as ts

from predictive_analysis.conformal import Coverage, ErrorWindow
from twinpipe.config import SeriesSettings

MODEL = "model"  # the forecaster names used as labels and tags: the configured model's own name,
PERSISTENCE = "persistence"  # and the two baselines
SEASONAL_NAIVE = "seasonal_naive"
RECENT_STEPS = 100  # steps (at least a season) whose spread defines the plausible envelope
ENVELOPE_SPREADS = 10.0  # the envelope reaches this many times the recent spread beyond it,
ENVELOPE_SCALE = 0.05  # plus this share of the plausible range's span (else of the recent magnitude)


def envelope(recent: Sequence[float], value_range: tuple[float, float] | None) -> tuple[float, float]:
    """Where a forecast of a series whose recent step means are `recent` (non-empty) may plausibly
    lie: [min − m, max + m] with m = 10 × (max − min) + 0.05 × (the range's span, or max(|min|, |max|, 1)
    without a range). A forecast beyond it is a diverged model, not a prediction (a heuristic: a
    season of a series with a daily cycle spans its swing; 10 of them is far beyond any weather)."""
    low, high = min(recent), max(recent)
    scale = value_range[1] - value_range[0] if value_range else max(abs(low), abs(high), 1.0)
    margin = ENVELOPE_SPREADS * (high - low) + ENVELOPE_SCALE * scale
    return low - margin, high + margin


def clip(value: float, value_range: tuple[float, float] | None) -> float:
    return value if value_range is None else min(max(value, value_range[0]), value_range[1])


def make_model(settings: SeriesSettings):
    """The configured river model for one series."""
    season = settings.steps(settings.season_s)
    if settings.model == "holt_winters":
        return ts.HoltWinters(
            alpha=settings.alpha,
            beta=settings.beta,
            gamma=settings.gamma if season else None,
            seasonality=season,
        )
    p, d, q = settings.order
    sp, sd, sq = settings.seasonal_order if season else (0, 0, 0)
    # Standardised inputs and a small learning rate: river's default SGD(0.01) on raw lags diverges
    # for series in the hundreds (pressure in hPa).
    regressor = preprocessing.StandardScaler() | linear_model.LinearRegression(
        intercept_init=0, optimizer=optim.SGD(0.005), intercept_lr=0.001
    )
    return ts.SNARIMAX(p=p, d=d, q=q, m=max(season, 1), sp=sp, sd=sd, sq=sq, regressor=regressor)


@dataclass(slots=True)
class Forecast:
    horizon_steps: int
    target_step: int
    value: float  # the model's forecast
    lower: float | None  # the conformal interval; None while too few errors are known
    upper: float | None
    persistence: float
    seasonal_naive: float


@dataclass(slots=True)
class Judged:
    """A forecast meeting its actual."""

    forecast: Forecast
    actual: float
    covered: bool | None  # None: it had no interval


class SeriesForecaster:
    __slots__ = (
        "settings",
        "value_range",
        "recent",
        "coverage",
        "horizons",
        "season",
        "model",
        "history",
        "learned",
        "last_step",
        "pending",
        "errors",
        "covered",
        "dropped",
        "model_failures",
    )

    def __init__(
        self,
        settings: SeriesSettings,
        coverage: float,
        error_window: int,
        value_range: tuple[float, float] | None = None,
    ) -> None:
        """`value_range`: the datastream's plausible (low, high), in its unit; None when unknown."""
        self.settings = settings
        self.value_range = value_range
        self.coverage = coverage
        # The 1-step horizon is always forecast: readings are judged against it (anomalies).
        self.horizons = sorted({1, *(settings.steps(h) for h in settings.horizons_s)})
        self.season = settings.steps(settings.season_s)
        self.model = make_model(settings)
        self.history: deque[float] = deque(maxlen=max(self.season, 1))
        self.recent: deque[float] = deque(maxlen=max(self.season, RECENT_STEPS))
        self.learned = 0
        self.last_step: int | None = None
        # Per horizon, forecasts in order of their target step; at most `horizon` of them wait.
        self.pending: dict[int, deque[Forecast]] = {h: deque() for h in self.horizons}
        names = (MODEL, PERSISTENCE, SEASONAL_NAIVE)
        self.errors = {(h, name): ErrorWindow(error_window) for h in self.horizons for name in names}
        self.covered = {h: Coverage() for h in self.horizons}
        self.dropped = 0  # forecasts whose target step never came (a gap), dropped unjudged
        self.model_failures = 0

    def ready(self) -> bool:
        """Enough steps learned for the model's forecasts to mean something: a full season plus one
        (the seasonal difference needs it), or a few steps without a season."""
        return self.learned > self.season + sum(self.settings.order)

    def next_interval(self, step: int) -> Forecast | None:
        """The 1-step forecast made for `step`, if any (to judge a reading as it arrives)."""
        waiting = self.pending[1]
        return waiting[0] if waiting and waiting[0].target_step == step else None

    def observe(self, step: int, value: float, forecast: bool = True) -> tuple[list[Judged], list[Forecast]]:
        """Learns the completed `step` (mean `value`); returns the forecasts judged against it and
        the new forecasts made after it (none with `forecast` False: a warm-up learning history
        whose forecasts would never be judged). Steps must increase; missing steps in between were
        filled by the caller or the forecaster was replaced."""
        judged = self._judge(step, value)
        try:
            if not self.learned and self.settings.model == "holt_winters" and not self.season:
                # river's Holt-Winters starts its trend at y1 − y0; beta = 0.001 would keep the noise
                # of two step means as a trend for ~1000 steps (−60 % at 30 steps ahead measured).
                # The first value learned twice starts the trend at 0.
                self.model.learn_one(value)
            self.model.learn_one(value)
        except (ArithmeticError, ValueError):  # a diverged regressor: start the model over
            self.model_failures += 1
            self.model = make_model(self.settings)
            self.learned = 0
        self.learned += 1
        self.history.append(value)
        self.recent.append(value)
        self.last_step = step
        return judged, self._forecast(step, value) if forecast else []

    def _judge(self, step: int, actual: float) -> list[Judged]:
        judged = []
        for horizon, waiting in self.pending.items():
            while waiting and waiting[0].target_step < step:
                waiting.popleft()
                self.dropped += 1
            if not waiting or waiting[0].target_step != step:
                continue
            forecast = waiting.popleft()
            self.errors[horizon, MODEL].add(actual - forecast.value)
            self.errors[horizon, PERSISTENCE].add(actual - forecast.persistence)
            self.errors[horizon, SEASONAL_NAIVE].add(actual - forecast.seasonal_naive)
            covered = None
            if forecast.lower is not None and forecast.upper is not None:
                covered = self.covered[horizon].judge(actual, forecast.lower, forecast.upper)
            judged.append(Judged(forecast, actual, covered))
        return judged

    def _forecast(self, step: int, last: float) -> list[Forecast]:
        if not self.ready():
            return []
        try:
            path = [float(value) for value in self.model.forecast(horizon=self.horizons[-1])]
        except (ArithmeticError, ValueError, IndexError, TypeError):
            path = [math.nan]
        low, high = envelope(self.recent, self.value_range)
        if not all(low <= value <= high for value in path):  # also false for NaN
            # Never written. A young model (river's regressors start at 0) gets time to converge;
            # a model that had it, or a path that is not finite, has diverged: it starts over.
            if self.learned >= self.season + sum(self.settings.order) + RECENT_STEPS or not all(
                math.isfinite(value) for value in path
            ):
                self.model_failures += 1
                self.model = make_model(self.settings)
                self.learned = 0
            return []
        made = []
        limits = self.value_range
        for horizon in self.horizons:
            value = path[horizon - 1]
            q = self.errors[horizon, MODEL].quantile(self.coverage)
            forecast = Forecast(
                horizon,
                step + horizon,
                clip(value, limits),
                None if q is None else clip(value - q, limits),
                None if q is None else clip(value + q, limits),
                last,
                self.seasonal_naive(horizon),
            )
            self.pending[horizon].append(forecast)
            made.append(forecast)
        return made

    def seasonal_naive(self, horizon: int) -> float:
        """The value one season before the target step (Hyndman & Athanasopoulos §5.2:
        ŷ_{T+h} = y_{T+h−m(k+1)}, k = ⌊(h−1)/m⌋); the last value without a season."""
        if not self.season or len(self.history) < self.season:
            return self.history[-1]
        return self.history[len(self.history) - self.season + (horizon - 1) % self.season]

    def pending_count(self) -> int:
        return sum(len(waiting) for waiting in self.pending.values())

    def drop_oldest(self, count: int) -> int:
        """Drops up to `count` of the pending forecasts, longest horizon first (they wait longest)."""
        dropped = 0
        for horizon in reversed(self.horizons):
            waiting = self.pending[horizon]
            while waiting and dropped < count:
                waiting.popleft()
                dropped += 1
        self.dropped += dropped
        return dropped
