"""Which rules apply to a datastream, with their thing and datastream overrides applied; fingerprints.

A rule is written for an observed property (`alerting.rules.<id>.observed_property`) and applies to
every datastream of that property (twinpipe.model's resolution) whose unit is the property's unit,
since its levels are in that unit. A thing override (`things.<model.things key>`) applies to every
device of that entry; a datastream override (`datastreams."<device>:<value>"`) to that datastream,
in either unit, and wins over the thing's. `enabled: false` turns the rule off there. Pure and
cached per (device, value).
"""

from __future__ import annotations

from functools import lru_cache

from twinpipe.config.alerting import AlertingConfig, Rule
from twinpipe.model import ResolvedDatastream, TwinModel

_FNV_OFFSET = 14695981039346656037
_FNV_PRIME = 1099511628211
_SEPARATOR = 0xFF


def label_fingerprint(labels: dict[str, str]) -> str:
    """16 hex digits, as Alertmanager fingerprints a label set (prometheus/common
    model/signature.go: FNV-1a 64 over the names and values sorted by name, each followed by 0xff)."""
    digest = _FNV_OFFSET
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in (*part.encode(), _SEPARATOR):
                digest = ((digest ^ byte) * _FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return f"{digest:016x}"


def fingerprint(rule_id: str, device: str, datastream: str) -> str:
    """One alert's identity: the fingerprint of the labels alertname (the rule id), device and
    datastream (the SensorThings id "<device>:<value>"). Severity and levels are left out so that
    changing them in config.yaml keeps the alert the same one."""
    return label_fingerprint({"alertname": rule_id, "device": device, "datastream": datastream})


class RuleSet:
    def __init__(self, config: AlertingConfig, model: TwinModel) -> None:
        self._rules = {rule_id: rule for rule_id, rule in config.rules.items()}
        self._model = model
        self.for_stream = lru_cache(maxsize=65536)(self._for_stream)

    @property
    def rules(self) -> dict[str, Rule]:
        return self._rules

    def stream(self, device: str, value: str) -> ResolvedDatastream | None:
        return self._model.datastream(device, value)

    def _for_stream(self, device: str, value: str) -> tuple[tuple[str, Rule], ...]:
        """(rule id, effective rule) of every enabled rule for this datastream, in config order."""
        stream = self._model.datastream(device, value)
        thing = self._model.thing(device)
        if stream is None or thing is None:
            return ()
        found = []
        for rule_id, rule in self._rules.items():
            if rule.observed_property != stream.observed_property_id:
                continue
            stream_override = rule.datastreams.get(stream.id)
            if stream.unit != stream.observed_property.unit and stream_override is None:
                continue  # levels are in the property's unit; this datastream has another
            effective = rule.with_override(rule.things.get(thing.entry)).with_override(stream_override)
            if effective.enabled:
                found.append((rule_id, effective))
        return tuple(found)
