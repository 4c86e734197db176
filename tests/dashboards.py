"""Reading the Grafana dashboards as Grafana would: their panels' queries and template variables.

No Grafana server installs here, so tests substitute the template variables the way Grafana does
and run each query against the real InfluxDB and Prometheus.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twinpipe.config import Config
from twinpipe.dashboard import streams
from twinpipe.envelope import Envelope

ROOT = Path(__file__).resolve().parents[1]
# The hand-written dashboards, then the Digital twin's copy generated from the shipped config.yaml
# (twinpipe/dashboard.py; compose writes its own from the config.yaml it mounts).
TWIN_DASHBOARD = ROOT / "grafana" / "twin" / "digital-twin.json"
DASHBOARDS = [
    *sorted((ROOT / "grafana" / "dashboards").glob("*.json")),
    *sorted(TWIN_DASHBOARD.parent.glob("*.json")),
]
INFLUX_UID = "twinpipe-influxdb"
PROMETHEUS_UID = "twinpipe-prometheus"


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: str
    datasource_uid: str
    text: str  # InfluxQL or PromQL, with Grafana's template variables still in it


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def queries(dashboard: dict[str, Any]) -> Iterator[Query]:
    """Every panel's queries, then every annotation's (its panel named "annotation <name>")."""
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            uid = (target.get("datasource") or panel["datasource"])["uid"]
            text = target["query"] if uid == INFLUX_UID else target["expr"]
            yield Query(dashboard["title"], panel["title"], uid, text)
    for annotation in dashboard.get("annotations", {}).get("list", []):
        uid = annotation["datasource"]["uid"]
        if uid in (INFLUX_UID, PROMETHEUS_UID):  # not Grafana's built-in annotations
            text = annotation["query"] if uid == INFLUX_UID else annotation["expr"]
            yield Query(dashboard["title"], f"annotation {annotation['name']}", uid, text)


def alert_transition(device: str, time_ns: int) -> dict[str, Any]:
    """A firing transition of the alerting stage (alerting/engine.py's event), for dashboards' data."""
    return {
        "v": 1,
        "fingerprint": "0123456789abcdef",
        "rule": "temperature_high",
        "kind": "above",
        "severity": "warning",
        "state": "firing",
        "device": device,
        "datastream": f"{device}:temperature",
        "value_name": "temperature",
        "observed_property": "temperature",
        "unit": "Cel",
        "value": 36.0,
        "threshold": 35.0,
        "clear": 33.0,
        "for_s": 60.0,
        "time_ns": time_ns,
        "starts_ns": time_ns - 60 * 10**9,
        "ends_ns": None,
        "clock": "event_time",
    }


def variables(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return dashboard.get("templating", {}).get("list", [])


def variable_values(variable: dict[str, Any], run: Callable[[str], list[str]]) -> list[str]:
    """The values Grafana would offer: the variable's query, filtered by its regex (JavaScript
    syntax, which Python's re accepts for the expressions used here)."""
    values = run(variable["query"])
    pattern = variable.get("regex", "")
    if pattern:
        regex = re.compile(pattern.strip("/"))
        values = [value for value in values if regex.fullmatch(value)]
    return values


# Grafana escapes a variable's values where they stand in a regex: InfluxQL's /.../ takes one
# backslash, PromQL's "..." string two (the string unescapes one).
INFLUX_REGEX_SPECIAL = re.compile(r"[\\^$*+?.()|\[\]{}/]")
PROMETHEUS_REGEX_SPECIAL = re.compile(r"[$^*{}\[\]'+?.()|\\]")


def regex_value(values: list[str], datasource_uid: str) -> str:
    """How Grafana formats a (multi-)value variable inside a regex: (a|b), each value escaped."""
    if datasource_uid == INFLUX_UID:
        escaped = [INFLUX_REGEX_SPECIAL.sub(lambda m: "\\" + m.group(0), v) for v in values]
    else:
        escaped = [PROMETHEUS_REGEX_SPECIAL.sub(lambda m: "\\\\" + m.group(0), v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


BUILTINS = {
    "$__rate_interval": "5s",
    "$__interval": "1s",
    "$__range": "5m",
    "$timeFilter": "time > now() - 15m",
}


def substitute(text: str, chosen: dict[str, str]) -> str:
    """Replace Grafana's built-in and template variables; longest names first ($device before $dev)."""
    replacements = {**BUILTINS, **{f"${name}": value for name, value in chosen.items()}}
    for name in sorted(replacements, key=len, reverse=True):
        text = text.replace(name, replacements[name])
    leftover = re.findall(r"\$\w+", text)
    assert not leftover, f"unsubstituted variables {leftover} in {text!r}"
    return text


def example_device(devices: str) -> str:
    """A device id a thing entry's `devices` (an id or a glob) matches: `sim-*` → `sim-twin`."""
    # A character class: its first character, or '_' for a negated one ([!...]).
    device = re.sub(r"\[(!?)(.)[^\]]*\]", lambda m: "_" if m.group(1) else m.group(2), devices)
    return device.replace("*", "twin").replace("?", "t")


def model_readings(config: Config, time_ns: int, boot: str = "twin") -> list[Envelope]:
    """One reading of every datastream the Digital twin dashboard shows, for one device of each thing
    in the model (mid-range values): what its per-thing queries need to return data."""
    envelopes = []
    for thing in config.model.things.values():
        values = {s.value: (sum(s.range) / 2 if s.range else 1.0) for s in streams(config.model, thing)}
        envelopes.append(Envelope(example_device(thing.devices), boot, 0, time_ns, values))
    return envelopes
