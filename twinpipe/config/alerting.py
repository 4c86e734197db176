"""`alerting:` — threshold, rate, no-data and anomaly rules on the twin's datastreams (alerting/).

    alerting:
      rules:
        <rule id>:
          observed_property: temperature     # a key of model.observed_properties
          kind: above | below | rate_of_change | no_data | anomaly
          raise: 35.0          # above/below/rate_of_change: the level that makes the condition true
          clear: 33.0          # ... and the level that makes it false again (hysteresis; default: raise)
          window_s: 60         # rate_of_change: the span the rate is measured over
          silence_s: 30        # no_data: seconds without a reading
          for_s: 10            # condition true this long before FIRING (PENDING meanwhile)
          keep_firing_for_s: 0 # FIRING this long after the condition became false
          severity: warning    # info | warning | critical
          things:      {<model.things key>: {<any key above but kind/observed_property>, enabled}}
          datastreams: {"<device>:<value name>": {... the same ...}}

Levels are in the observed property's unit (UCUM, `model.observed_properties.<id>.unit.code`); a
rate is in that unit per second. Which thing and datastream a key names is checked against the model
in `twinpipe.config.schema` (a rule for an unknown property, thing or datastream names the key).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from twinpipe.config.common import HttpUrl, KafkaTopic, Measurement, Positive, Section

Kind = Literal["above", "below", "rate_of_change", "no_data", "anomaly"]
Severity = Literal["info", "warning", "critical"]
SEVERITIES = ("info", "warning", "critical")
RESERVED_LABELS = ("alertname", "device", "datastream", "severity")  # every alert's own labels
LEVEL_KINDS = ("above", "below", "rate_of_change")
Seconds = Annotated[float, Field(ge=0, le=30 * 86400)]


class RuleOverride(Section):
    """What a thing or a datastream changes of a rule; unset keys keep the rule's value."""

    model_config = ConfigDict(**Section.model_config, serialize_by_alias=True)  # `raise` in dumps

    enabled: bool | None = None
    raise_: float | None = Field(default=None, alias="raise")
    clear: float | None = None
    window_s: Positive | None = None
    silence_s: Positive | None = None
    for_s: Seconds | None = None
    keep_firing_for_s: Seconds | None = None
    severity: Severity | None = None


class Rule(Section):
    model_config = ConfigDict(**Section.model_config, serialize_by_alias=True)  # `raise` in dumps
    observed_property: str
    kind: Kind
    enabled: bool = True
    raise_: float | None = Field(default=None, alias="raise")
    clear: float | None = None  # default: raise (no hysteresis band)
    window_s: Annotated[float, Field(gt=0, le=86400)] = 60.0
    silence_s: Annotated[float, Field(gt=0, le=30 * 86400)] = 60.0
    # anomaly: the condition stays true this long after the latest anomaly event (wall clock).
    for_s: Seconds = 0.0
    keep_firing_for_s: Seconds = 0.0
    severity: Severity = "warning"
    things: dict[str, RuleOverride] = {}
    datastreams: dict[str, RuleOverride] = {}

    @model_validator(mode="after")
    def _levels(self) -> Rule:
        problem = level_problem(self.kind, self.raise_, self.clear)
        if problem:
            raise ValueError(problem)
        errors = []
        for where, overrides in (("things", self.things), ("datastreams", self.datastreams)):
            for key, override in overrides.items():
                raise_ = override.raise_ if override.raise_ is not None else self.raise_
                clear = override.clear if override.clear is not None else self.clear
                problem = level_problem(self.kind, raise_, clear)
                if problem:
                    errors.append(f"{where}.{key}.{problem}")
        if errors:
            raise ValueError("; ".join(errors))
        return self

    def with_override(self, override: RuleOverride | None) -> Rule:
        """This rule with an override's set keys applied (validated again: the levels must still fit)."""
        if override is None:
            return self
        changes = override.model_dump(exclude_none=True, by_alias=True)
        document = self.model_dump(by_alias=True, exclude={"things", "datastreams"}) | changes
        return Rule.model_validate(document)

    def threshold(self) -> float | None:
        if self.kind == "no_data":
            return self.silence_s
        return self.raise_

    def clear_level(self) -> float | None:
        return self.clear if self.clear is not None else self.raise_


def level_problem(kind: str, raise_: float | None, clear: float | None) -> str | None:
    """Why raise/clear do not suit `kind`, or None: the clear level lies on the safe side of raise."""
    if kind not in LEVEL_KINDS:
        return None
    if raise_ is None or not math.isfinite(raise_):
        return f"raise: a {kind} rule needs a finite raise level"
    if kind == "rate_of_change" and raise_ < 0:
        return f"raise: {raise_} < 0; a rate_of_change rule compares the absolute rate (per s)"
    if clear is None:
        return None
    if not math.isfinite(clear):
        return f"clear: expected a finite number, got {clear}"
    if kind == "below" and clear < raise_:
        return f"clear: {clear} is below raise {raise_}; a below rule clears at or above its raise level"
    if kind != "below" and clear > raise_:
        return f"clear: {clear} is above raise {raise_}; an {kind} rule clears at or below its raise level"
    if kind == "rate_of_change" and clear < 0:
        return f"clear: {clear} < 0; a rate_of_change rule compares the absolute rate (per s)"
    return None


class AlertmanagerConfig(Section):
    """Forwarding to an Alertmanager's v2 API (POST /api/v2/alerts)."""

    enabled: bool = False
    url: HttpUrl = "http://localhost:9093"  # the base URL; the stage adds /api/v2/alerts
    resend_interval_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    timeout_s: Positive = 5.0
    # Extra labels on every alert (routing), e.g. {team: facilities}.
    labels: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], str] = {}

    @model_validator(mode="after")
    def _own_labels(self) -> AlertmanagerConfig:
        taken = sorted(name for name in self.labels if name in RESERVED_LABELS or name.startswith("__"))
        if taken:
            raise ValueError(
                f"labels: {taken} are set by the stage ({', '.join(RESERVED_LABELS)}) or reserved by"
                " Alertmanager (__*); choose other label names"
            )
        return self


class AlertingConfig(Section):
    group_id: str = "twinpipe-alerting"
    topics: Annotated[list[KafkaTopic], Field(min_length=1)] | None = None  # None: [kafka.telemetry_topic]
    start_from: Literal["latest", "earliest"] = "latest"  # where a new consumer group starts
    anomaly_topic: KafkaTopic | None = "twin.anomalies"  # None: no anomaly input
    topic: KafkaTopic = "twin.alerts"
    # Compacted: the rule state per (input topic, device), read back on start and on rebalance.
    state_topic: KafkaTopic = "twin.alerts.state"
    mqtt_topic_template: str = "twin/{device}/alerts"
    measurement: Measurement | None = "twin_alerts"  # None: transitions are not written to InfluxDB
    tick_interval_s: Annotated[float, Field(gt=0, le=60)] = 0.25  # no_data/anomaly timers
    # State snapshots, the producer's flush and the offset commit happen together this often.
    commit_interval_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    restore_timeout_s: Positive = 60.0  # reading the state topic back on assignment
    max_pending_points: Annotated[int, Field(ge=1)] = 100_000  # InfluxDB queue; overflow is counted
    max_queued_mqtt: Annotated[int, Field(ge=1)] = 100_000  # MQTT messages queued while disconnected
    alertmanager: AlertmanagerConfig = AlertmanagerConfig()
    # Replaces the shipped rules (DEFAULT_RULES) when given; {} = no rules.
    rules: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")], Rule] = Field(
        default_factory=lambda: {key: Rule.model_validate(rule) for key, rule in DEFAULT_RULES.items()}
    )

    @model_validator(mode="after")
    def _template(self) -> AlertingConfig:
        template = self.mqtt_topic_template
        if "{device}" not in template or any(c in template for c in "+#"):
            raise ValueError(
                f"mqtt_topic_template: {template!r} needs the placeholder {{device}} and no MQTT"
                " wildcard (+, #): it is a topic to publish on"
            )
        return self


# The shipped rules (config.yaml shows the same). Levels: indoor comfort and equipment limits for
# temperature and humidity; a storm's pressure fall; for PM2.5 and PM10 the EU air-quality limits
# (Directive 2008/50/EC: PM10 50 µg/m³ daily, PM2.5 25 µg/m³); for noise the 65 dB(A) daytime level
# above which WHO's Environmental Noise Guidelines (2018) see strong health effects from road traffic.
DEFAULT_RULES: dict[str, dict] = {
    "temperature_high": {
        "observed_property": "temperature",
        "kind": "above",
        "raise": 35.0,
        "clear": 33.0,
        "for_s": 60.0,
        "severity": "warning",
    },
    "temperature_low": {
        "observed_property": "temperature",
        "kind": "below",
        "raise": 2.0,
        "clear": 4.0,
        "for_s": 60.0,
        "severity": "warning",
    },
    "temperature_rate": {
        "observed_property": "temperature",
        "kind": "rate_of_change",
        "raise": 0.1,
        "clear": 0.05,
        "window_s": 60.0,
        "for_s": 30.0,
        "severity": "warning",
    },
    "temperature_no_data": {
        "observed_property": "temperature",
        "kind": "no_data",
        "silence_s": 120.0,
        "severity": "critical",
    },
    "temperature_anomaly": {
        "observed_property": "temperature",
        "kind": "anomaly",
        "window_s": 60.0,
        "for_s": 10.0,
        "severity": "info",
    },
    "humidity_high": {
        "observed_property": "humidity",
        "kind": "above",
        "raise": 90.0,
        "clear": 85.0,
        "for_s": 300.0,
        "severity": "warning",
    },
    "pressure_low": {
        "observed_property": "pressure",
        "kind": "below",
        "raise": 980.0,
        "clear": 985.0,
        "for_s": 600.0,
        "severity": "info",
    },
    "pm2_5_high": {
        "observed_property": "pm2_5",
        "kind": "above",
        "raise": 25.0,
        "clear": 20.0,
        "for_s": 300.0,
        "keep_firing_for_s": 600.0,
        "severity": "warning",
    },
    "pm10_high": {
        "observed_property": "pm10",
        "kind": "above",
        "raise": 50.0,
        "clear": 40.0,
        "for_s": 300.0,
        "keep_firing_for_s": 600.0,
        "severity": "warning",
    },
    "noise_high": {
        "observed_property": "noise",
        "kind": "above",
        "raise": 65.0,
        "clear": 60.0,
        "for_s": 60.0,
        "severity": "warning",
    },
}
