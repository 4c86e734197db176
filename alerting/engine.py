"""Every alert's state, kept per input partition and device, fed readings, anomaly events and ticks.

State is grouped like the consumer's assignment: (input topic, partition) → device → one
MachineState per (value name, rule id). A partition's devices are loaded when it is assigned
(`load`, from the state topic) and dropped when it is revoked (`drop`); `snapshots` hands out the
documents of the devices that changed since the last call, for the state topic. No I/O here.

The transition event (Kafka `alerting.topic`, MQTT `twin/{device}/alerts`), JSON, version 1:

    {"v": 1, "fingerprint": "4f0c...", "rule": "temperature_high", "kind": "above",
     "severity": "warning", "state": "pending" | "firing" | "resolved" | "ok",
     "device": "sim-1", "datastream": "sim-1:temperature", "value_name": "temperature",
     "observed_property": "temperature", "unit": "Cel", "value": 35.4, "threshold": 35.0,
     "clear": 33.0, "for_s": 60.0, "time_ns": ..., "starts_ns": ..., "ends_ns": null | ...,
     "clock": "event_time" | "wall_clock"}

`value` and `threshold` are in `unit` (UCUM; a rate_of_change per s, so `Cel/s`; no_data in s of
silence). `time_ns` is when the transition happened on the rule's clock, `starts_ns` when the
condition became true, `ends_ns` when a resolved/ok alert ended.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from alerting.rules import (
    EVENT_TIME_KINDS,
    FIRING,
    OK,
    RESOLVED,
    WALL_CLOCK_KINDS,
    MachineState,
    Transition,
    on_anomaly,
    on_reading,
    on_tick,
    restarted,
)
from alerting.ruleset import RuleSet, fingerprint
from twinpipe.config.alerting import SEVERITIES, Rule

STATE_VERSION = 1
Source = tuple[str, int]  # (input topic, partition)


@dataclass(frozen=True, slots=True)
class Alert:
    """A transition with what it is about."""

    event: dict[str, Any]
    rule: Rule

    @property
    def device(self) -> str:
        return self.event["device"]


def state_key(group: str, topic: str, device: str) -> str:
    """The state topic's key for one device's state read from `topic` by consumer group `group`
    ('/' occurs in neither topic nor device; a group id may hold one, so it comes first)."""
    return f"{group}/{topic}/{device}"


class Engine:
    def __init__(self, rules: RuleSet) -> None:
        self._rules = rules
        self._states: dict[Source, dict[str, dict[tuple[str, str], MachineState]]] = {}
        self._dirty: set[tuple[Source, str]] = set()
        self._timed: set[tuple[Source, str, str, str]] = set()  # machines of wall-clock kinds

    # --- inputs ---

    def reading(
        self, source: Source, device: str, values: dict[str, float], time_ns: int, arrival_ns: int
    ) -> list[Alert]:
        alerts: list[Alert] = []
        machines = self._states.setdefault(source, {}).setdefault(device, {})
        for value_name, value in values.items():
            for rule_id, rule in self._rules.for_stream(device, value_name):
                key = (value_name, rule_id)
                before = machines.get(key, MachineState())
                after, transitions = on_reading(rule, before, time_ns, value, arrival_ns)
                if after is not before:
                    machines[key] = after
                    self._dirty.add((source, device))
                    if rule.kind in WALL_CLOCK_KINDS:
                        self._timed.add((source, device, value_name, rule_id))
                alerts += self._alerts(rule_id, rule, device, value_name, transitions)
        return alerts

    def anomaly(
        self, source: Source, device: str, value_name: str, value: float, arrival_ns: int
    ) -> list[Alert]:
        alerts: list[Alert] = []
        machines = self._states.setdefault(source, {}).setdefault(device, {})
        for rule_id, rule in self._rules.for_stream(device, value_name):
            if rule.kind != "anomaly":
                continue
            key = (value_name, rule_id)
            after, transitions = on_anomaly(rule, machines.get(key, MachineState()), arrival_ns, value)
            machines[key] = after
            self._dirty.add((source, device))
            self._timed.add((source, device, value_name, rule_id))
            alerts += self._alerts(rule_id, rule, device, value_name, transitions)
        return alerts

    def tick(self, now_ns: int) -> list[Alert]:
        alerts: list[Alert] = []
        for source, device, value_name, rule_id in list(self._timed):
            machines = self._states.get(source, {}).get(device)
            rule = dict(self._rules.for_stream(device, value_name)).get(rule_id)
            if machines is None or rule is None or (value_name, rule_id) not in machines:
                self._timed.discard((source, device, value_name, rule_id))
                continue
            before = machines[(value_name, rule_id)]
            after, transitions = on_tick(rule, before, now_ns)
            if transitions:
                machines[(value_name, rule_id)] = after
                self._dirty.add((source, device))
            alerts += self._alerts(rule_id, rule, device, value_name, transitions)
        return alerts

    # --- partitions ---

    def load(
        self, source: Source, documents: dict[str, dict[str, Any]], now_ns: int, latest_ns: int | None = None
    ) -> list[Alert]:
        """Take over a partition's devices from their state documents; the firing alerts among them
        are returned (as `firing` events at their last transition) so forwarding resumes. An
        event-time alert whose latest reading lies after `latest_ns` (written before implausible
        event times were skipped) starts afresh instead of ignoring every reading until then."""
        devices: dict[str, dict[tuple[str, str], MachineState]] = {}
        firing: list[Alert] = []
        for device, document in documents.items():
            machines = {}
            for key, data in document.get("machines", {}).items():
                value_name, _, rule_id = key.partition("|")
                rule = dict(self._rules.for_stream(device, value_name)).get(rule_id)
                if rule is None:
                    continue  # the rule is gone from config.yaml, or no longer applies here
                state = restarted(rule, MachineState.from_dict(data), now_ns)
                if (
                    latest_ns is not None
                    and rule.kind in EVENT_TIME_KINDS
                    and state.last_input_ns is not None
                    and state.last_input_ns > latest_ns
                ):
                    continue
                machines[(value_name, rule_id)] = state
                if rule.kind in WALL_CLOCK_KINDS:
                    self._timed.add((source, device, value_name, rule_id))
                if state.state == FIRING and state.since_ns is not None:
                    moment = Transition(FIRING, state.since_ns, state.since_ns, None, state.value)
                    firing += self._alerts(rule_id, rule, device, value_name, [moment])
                    announced = data.get("severity")  # the severity it was firing with before
                    if announced in SEVERITIES and announced != rule.severity:
                        # Another label set in Alertmanager: resolve the old one now.
                        ended = Transition(RESOLVED, now_ns, state.since_ns, now_ns, state.value)
                        before = rule.model_copy(update={"severity": announced})
                        firing += self._alerts(rule_id, before, device, value_name, [ended])
            devices[device] = machines
        self._states[source] = devices
        return firing

    def fingerprints(self, source: Source) -> set[str]:
        """The fingerprints of every alert held for `source`."""
        return {
            fingerprint(rule_id, device, f"{device}:{value_name}")
            for device, machines in self._states.get(source, {}).items()
            for value_name, rule_id in machines
        }

    def drop(self, source: Source) -> None:
        self._states.pop(source, None)
        self._dirty = {entry for entry in self._dirty if entry[0] != source}
        self._timed = {entry for entry in self._timed if entry[0] != source}

    def snapshots(self) -> list[tuple[Source, str, dict[str, Any]]]:
        """(source, device, state document) of every device changed since the last call; each
        machine's document carries the severity it is announced with (to resolve the old label set
        in Alertmanager when config.yaml changes it)."""
        found = []
        for source, device in sorted(self._dirty):
            machines = self._states.get(source, {}).get(device)
            if machines is None:
                continue
            document = {
                "v": STATE_VERSION,
                "topic": source[0],
                "device": device,
                "machines": {
                    f"{value}|{rule_id}": self._document(device, value, rule_id, state)
                    for (value, rule_id), state in machines.items()
                },
            }
            found.append((source, device, document))
        self._dirty.clear()
        return found

    def _document(self, device: str, value_name: str, rule_id: str, state: MachineState) -> dict[str, Any]:
        rule = dict(self._rules.for_stream(device, value_name)).get(rule_id)
        return {**state.to_dict(), "severity": rule.severity if rule is not None else None}

    def active(self) -> Iterator[tuple[str, Rule, str]]:
        """(rule id, rule, state) of every pending or firing alert held."""
        for devices in self._states.values():
            for device, machines in devices.items():
                for (value_name, rule_id), state in machines.items():
                    if state.state != OK:
                        rule = dict(self._rules.for_stream(device, value_name)).get(rule_id)
                        if rule is not None:
                            yield rule_id, rule, state.state

    # --- events ---

    def _alerts(
        self, rule_id: str, rule: Rule, device: str, value_name: str, transitions: list[Transition]
    ) -> list[Alert]:
        if not transitions:
            return []
        stream = self._rules.stream(device, value_name)
        unit = stream.unit.code if stream is not None else ""
        if rule.kind == "rate_of_change":
            unit = f"{unit}/s"
        elif rule.kind == "no_data":
            unit = "s"
        datastream = f"{device}:{value_name}"
        return [
            Alert(
                {
                    "v": 1,
                    "fingerprint": fingerprint(rule_id, device, datastream),
                    "rule": rule_id,
                    "kind": rule.kind,
                    "severity": rule.severity,
                    "state": t.state,
                    "device": device,
                    "datastream": datastream,
                    "value_name": value_name,
                    "observed_property": rule.observed_property,
                    "unit": unit,
                    "value": t.value if t.value is not None and math.isfinite(t.value) else None,
                    "threshold": rule.threshold(),
                    "clear": rule.clear_level() if rule.kind not in ("no_data", "anomaly") else None,
                    "for_s": rule.for_s,
                    "time_ns": t.time_ns,
                    "starts_ns": t.starts_ns,
                    "ends_ns": t.ends_ns,
                    "clock": "event_time" if rule.kind in EVENT_TIME_KINDS else "wall_clock",
                },
                rule,
            )
            for t in transitions
        ]
