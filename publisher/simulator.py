"""Simulated sensors: a mean, Gaussian noise, a slow mean-reverting drift and rare outliers."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from publisher.board_commands import BoardSettings, heater_offset, heats
from twinpipe.config import SensorModel, SimulatorConfig

DRIFT_REVERSION = 0.01  # fraction of the drift pulled back towards the mean each sample


class SensorSignal:
    def __init__(
        self, model: SensorModel, rng: random.Random, outlier_probability: float, outlier_scale: float
    ):
        self._model = model
        self._rng = rng
        self._outlier_probability = outlier_probability
        self._outlier_scale = outlier_scale
        self._drift = 0.0

    def sample(self) -> float:
        model, rng = self._model, self._rng
        self._drift = (1 - DRIFT_REVERSION) * self._drift + rng.gauss(0.0, model.drift)
        value = model.mean + self._drift + rng.gauss(0.0, model.stddev)
        if rng.random() < self._outlier_probability:
            value += rng.choice((-1, 1)) * self._outlier_scale * model.stddev
        return round(value, 2)


class SimulatedBoard:
    """One board: a signal per sensor, sampled together like a frame from real hardware. It obeys
    commands (publisher/board_commands.py): `heater` warms its temperatures over time,
    `report_interval_s` is how often its source reads it."""

    def __init__(
        self,
        sensors: dict[str, SensorModel],
        config: SimulatorConfig,
        rng: random.Random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._signals = {
            name: SensorSignal(model, rng, config.outlier_probability, config.outlier_scale)
            for name, model in sensors.items()
        }
        self._config = config
        self._clock = clock
        self.settings = BoardSettings(1.0 / config.rate_hz)
        self._heat = 0.0  # Cel added to temperatures by the heater
        self._heat_at = clock()
        self._ramp = config.ramp if config.ramp is not None and config.ramp.sensor in sensors else None
        self._interval_s = 1.0 / config.rate_hz
        self._reads = 0

    def read(self) -> dict[str, float]:
        now = self._clock()
        self._heat = heater_offset(
            self._heat,
            self.settings.heater,
            now - self._heat_at,
            self._config.heater_rise_per_s,
            self._config.heater_max_rise,
        )
        self._heat_at = now
        values = {
            name: round(signal.sample() + self._heat, 2) if self._heat and heats(name) else signal.sample()
            for name, signal in self._signals.items()
        }
        if self._ramp is not None:  # publisher.simulator.ramp: time counted in readings at rate_hz
            name = self._ramp.sensor
            values[name] = round(values[name] + self._ramp.offset(self._reads * self._interval_s), 2)
        self._reads += 1
        return values


def models_for_fields(fields: list[str], sensors: dict[str, SensorModel]) -> dict[str, SensorModel]:
    """Pick a model per frame field: by exact name, else by suffix ("wall1_temperature" → temperature)."""
    models = {}
    for field in fields:
        match = sensors.get(field) or next(
            (model for name, model in sensors.items() if field.endswith("_" + name)), None
        )
        if match is None:
            raise ValueError(f"publisher.simulator.sensors: no model for frame field {field!r}")
        models[field] = match
    return models
