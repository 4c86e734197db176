"""Forecasts, accuracy and decompositions → InfluxDB line protocol, and anomaly events → JSON. Pure.

Every point's tags: device, value (the value name, the field key of the reading in the telemetry
measurement), thing (the device's entry in model.things, when it has one); forecast and accuracy
points add horizon (seconds, as text), accuracy points model. A point is identified by its tags
and time, so re-processing a step writes the identical points again (idempotent).
"""

from __future__ import annotations

import orjson

from predictive_analysis.forecaster import Forecast

ANOMALY_VERSION = 1


_ESCAPE_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n", "\r": r"\r", "\t": r"\t"})
_ESCAPE_TAG = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\r": r"\r", "\t": r"\t"})


def _tag(value: str) -> str:
    escaped = value.translate(_ESCAPE_TAG)
    return escaped + " " if escaped.endswith("\\") else escaped


def _fields(fields: dict[str, float | int]) -> str:
    """Floats as repr (round-trips), ints with the i suffix; keys are fixed identifiers here."""
    return ",".join(
        f"{key}={value}i" if isinstance(value, int) else f"{key}={value!r}" for key, value in fields.items()
    )


class SeriesTags:
    """The tags one series' points share; the escaped tag sets are built once per measurement."""

    __slots__ = ("device", "value", "thing", "observed_property", "_prefix")

    def __init__(self, device: str, value: str, thing: str | None, observed_property: str | None) -> None:
        self.device = device
        self.value = value
        self.thing = thing
        self.observed_property = observed_property  # not a tag: a metrics label
        self._prefix: dict[str, str] = {}

    def line(self, measurement: str, time_ns: int, fields: dict[str, float | int], **extra: str) -> str:
        """One line of protocol; tags sorted by key, as InfluxDB stores them."""
        prefix = self._prefix.get(measurement)
        if prefix is None:
            prefix = self._prefix[measurement] = measurement.translate(_ESCAPE_MEASUREMENT)
        tags = {"device": self.device, "value": self.value, **extra}
        if self.thing:
            tags["thing"] = self.thing
        tagged = ",".join(f"{key}={_tag(tags[key])}" for key in sorted(tags))
        return f"{prefix},{tagged} {_fields(fields)} {time_ns}"


def forecast_line(
    measurement: str, tags: SeriesTags, forecast: Forecast, step_ns: int, horizon_s: float
) -> str:
    """At the target step's start: forecast, lower and upper (when known), the baselines, and the
    start of the step it was made after (issued, ns)."""
    fields: dict[str, float | int] = {"forecast": forecast.value}
    if forecast.lower is not None and forecast.upper is not None:
        fields |= {"lower": forecast.lower, "upper": forecast.upper}
    fields |= {
        "persistence": forecast.persistence,
        "seasonal_naive": forecast.seasonal_naive,
        "issued": (forecast.target_step - forecast.horizon_steps) * step_ns,
    }
    return tags.line(measurement, forecast.target_step * step_ns, fields, horizon=f"{horizon_s:g}")


def accuracy_line(
    measurement: str,
    tags: SeriesTags,
    time_ns: int,
    horizon_s: float,
    model: str,
    mae: float,
    rmse: float,
    count: int,
    coverage: float | None,
) -> str:
    fields: dict[str, float | int] = {"mae": mae, "rmse": rmse, "n": count}
    if coverage is not None:
        fields["coverage"] = coverage
    return tags.line(measurement, time_ns, fields, horizon=f"{horizon_s:g}", model=model)


def decomposition_lines(
    measurement: str,
    tags: SeriesTags,
    times_ns: list[int],
    trend: list[float],
    seasonal: list[float],
    resid: list[float],
) -> list[str]:
    return [
        tags.line(measurement, t, {"trend": tr, "seasonal": se, "resid": re})
        for t, tr, se, re in zip(times_ns, trend, seasonal, resid, strict=True)
    ]


def anomaly_event(
    tags: SeriesTags,
    time_ns: int,
    value: float,
    forecast: float,
    lower: float,
    upper: float,
    horizon_s: float,
    coverage: float,
    model: str,
) -> bytes:
    """The `twin.anomalies` value (shape fixed in the cross-team interfaces): the reading, its
    step's 1-step forecast and the interval for single readings around it."""
    return orjson.dumps(
        {
            "v": ANOMALY_VERSION,
            "device": tags.device,
            "datastream": f"{tags.device}:{tags.value}",
            "value_name": tags.value,
            "time_ns": time_ns,
            "value": value,
            "forecast": forecast,
            "lower": lower,
            "upper": upper,
            "horizon_s": float(horizon_s),
            "coverage": coverage,
            "model": model,
        }
    )
