"""The *Digital twin* Grafana dashboard, generated from the model in config.yaml.

`python -m twinpipe dashboard [--config PATH] [--output PATH] [--check]` writes it, by default to
the repository's copy grafana/twin/digital-twin.json (`make dashboard`; `make demo` runs it), and a
test checks that this copy equals what the shipped config.yaml generates, so names and units never
drift from the model. Under compose, the one-shot service `twin-dashboard` runs it at every `up`
against the config.yaml the stages read and writes into a volume Grafana provisions from
(docker-compose.yml), so an edited model reaches Grafana without a venv. The copy lives outside
grafana/dashboards/ so Grafana never loads two dashboards with one uid. Pure:
`digital_twin(config)` returns the dashboard as a dict.

Panels, top to bottom:

* **Things** (Geomap): one marker per device of a thing with a location, from
  `ingestion.location_measurement` (one row per device: `last()` of latitude, longitude and name
  grouped by device and thing, `resultFormat: table`), outer-joined by `device` with each thing's
  latest *state* (one table query per thing, merged first) and coloured by it.
* **Board view** (Canvas), one per thing entry that names one device and declares datastreams (the
  Nucleo): a card per datastream, laid out by the value name's prefix (`ambient`, `wall1`, `wall2`:
  columns) and observed property (rows), each showing the latest value with the model's unit.
* Per thing entry: **Latest** (stat) and **History** (time series), one query per datastream
  (`refId` = the value name), named and unit-ed from the model by `byFrameRefID` overrides.
* The device/sensor panels that existed before (template variables `device` and `sensor`), their
  units and ranges from the observed properties.

A thing's datastreams are the value names its entry declares; an entry that declares none (a fleet,
a replayed station) gets one per observed property, named after it (`temperature`): the model's
rule that a value named like an observed property is its datastream. A thing's *state* (the map's
colour) is its first datastream of the first observed property in the model (temperature in the
shipped file). Twin panels select by the `thing` tag, not by the `device` variable: they show the
model, whatever devices are picked for the generic panels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twinpipe.config import Config
from twinpipe.config.model import ModelConfig, ObservedProperty, Thing, Unit
from twinpipe.model import grafana_unit, humanise, stream_defaults

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "grafana" / "twin" / "digital-twin.json"
INFLUX = {"type": "influxdb", "uid": "twinpipe-influxdb"}
STATE_FIELD = "state"

# Colour steps per observed property id, for display only (not plausibility: that is the model's
# range). Properties not listed are shown in one colour.
THRESHOLDS: dict[str, list[tuple[str, float | None]]] = {
    "temperature": [("blue", None), ("green", 10), ("orange", 30), ("red", 35)],
    "humidity": [("orange", None), ("green", 30), ("orange", 70), ("red", 80)],
    "pressure": [("orange", None), ("green", 980), ("orange", 1040)],
}


@dataclass(frozen=True)
class Stream:
    """A datastream of a thing entry as the dashboard shows it."""

    value: str  # field key in InfluxDB
    name: str
    property_id: str
    unit: Unit
    range: tuple[float, float] | None


def streams(model: ModelConfig, thing: Thing) -> list[Stream]:
    """The datastreams of a thing entry, in file order (see the module docstring for the rule)."""
    found = []
    if thing.datastreams:
        for value, declared in thing.datastreams.items():
            prop = model.observed_properties[declared.observed_property]
            name, unit, value_range = stream_defaults(value, declared, prop)
            found.append(Stream(value, name, declared.observed_property, unit, value_range))
        return found
    for pid, prop in model.observed_properties.items():
        found.append(Stream(pid, prop.name, pid, prop.unit, prop.range.pair() if prop.range else None))
    return found


def state_stream(model: ModelConfig, thing: Thing) -> Stream | None:
    """The datastream that colours a thing on the map: the first of the first observed property."""
    ordered = list(model.observed_properties)
    candidates = sorted(streams(model, thing), key=lambda s: ordered.index(s.property_id))
    return candidates[0] if candidates else None


# --- queries ---


def location_query(measurement: str) -> str:
    """One row per device (with `resultFormat: table`): numbers latitude/longitude, text location."""
    return (
        f'SELECT last("latitude") AS "latitude", last("longitude") AS "longitude",'
        f' last("name") AS "location" FROM "{measurement}" WHERE $timeFilter GROUP BY "device", "thing"'
    )


def state_query(measurement: str, thing_key: str, value: str) -> str:
    return (
        f'SELECT last("{value}") AS "{STATE_FIELD}" FROM "{measurement}"'
        f' WHERE "thing" = \'{thing_key}\' AND $timeFilter GROUP BY "device"'
    )


def latest_query(measurement: str, thing_key: str, value: str) -> str:
    return (
        f'SELECT last("{value}") FROM "{measurement}"'
        f' WHERE "thing" = \'{thing_key}\' AND $timeFilter GROUP BY "device"'
    )


def history_query(measurement: str, thing_key: str, value: str) -> str:
    return (
        f'SELECT mean("{value}") FROM "{measurement}" WHERE "thing" = \'{thing_key}\' AND $timeFilter'
        f' GROUP BY time($__interval), "device" fill(none)'
    )


def board_query(measurement: str, thing_key: str, values: list[str]) -> str:
    """One row (`resultFormat: table`): the latest of each value, the columns named by the values."""
    columns = ", ".join(f'last("{value}") AS "{value}"' for value in values)
    return f'SELECT {columns} FROM "{measurement}" WHERE "thing" = \'{thing_key}\' AND $timeFilter'


# --- panel parts ---


def _target(ref_id: str, query: str, result_format: str = "time_series", alias: str = "") -> dict[str, Any]:
    return {
        "refId": ref_id,
        "datasource": INFLUX,
        "query": query,
        "rawQuery": True,
        "resultFormat": result_format,
        "alias": alias,
    }


def _thresholds(property_id: str) -> dict[str, Any]:
    steps = THRESHOLDS.get(property_id, [("green", None)])
    return {"mode": "absolute", "steps": [{"color": color, "value": value} for color, value in steps]}


def _properties(unit: Unit, property_id: str) -> list[dict[str, Any]]:
    return [
        {"id": "unit", "value": grafana_unit(unit)},
        {"id": "thresholds", "value": _thresholds(property_id)},
    ]


def _stream_override(stream: Stream) -> dict[str, Any]:
    return {
        "matcher": {"id": "byFrameRefID", "options": stream.value},
        "properties": _properties(stream.unit, stream.property_id),
    }


def _panel(kind: str, title: str, description: str, grid: tuple[int, int, int, int]) -> dict[str, Any]:
    x, y, w, h = grid
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": INFLUX,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
    }


# --- panels ---


def map_panel(config: Config, grid: tuple[int, int, int, int]) -> dict[str, Any] | None:
    model, settings = config.model, config.ingestion
    if settings.location_measurement is None:
        return None
    located = {key: thing for key, thing in model.things.items() if thing.location is not None}
    if not located:
        return None
    targets = [_target("locations", location_query(settings.location_measurement), "table")]
    state_refs = []
    state_prop: ObservedProperty | None = None
    state_pid = ""
    for key, thing in located.items():
        stream = state_stream(model, thing)
        if stream is None:
            continue
        state_refs.append(f"state_{key}")
        targets.append(_target(state_refs[-1], state_query(settings.measurement, key, stream.value), "table"))
        state_pid = state_pid or stream.property_id
        state_prop = state_prop or model.observed_properties[stream.property_id]
    transformations: list[dict[str, Any]] = []
    color: dict[str, Any] = {"fixed": "dark-green"}
    overrides = []
    if state_refs:
        transformations = [
            {
                "id": "merge",
                "filter": {"id": "byRefId", "options": "/^state_/"},
                "options": {},
            },
            {"id": "joinByField", "options": {"byField": "device", "mode": "outer"}},
        ]
        color = {"field": STATE_FIELD, "fixed": "dark-green"}
        assert state_prop is not None
        overrides = [
            {
                "matcher": {"id": "byName", "options": STATE_FIELD},
                "properties": [
                    {"id": "unit", "value": grafana_unit(state_prop.unit)},
                    {"id": "displayName", "value": state_prop.name},
                    {"id": "thresholds", "value": _thresholds(state_pid)},
                ],
            }
        ]
    panel = _panel(
        "geomap",
        "Things",
        "Where each thing of the model is (ingestion.location_measurement), coloured by its latest"
        f" {state_prop.name.lower() if state_prop else 'state'}; hover for the device and its values.",
        grid,
    )
    panel |= {
        "targets": targets,
        "transformations": transformations,
        "fieldConfig": {
            "defaults": {"color": {"mode": "thresholds"}, "thresholds": _thresholds(state_pid)},
            "overrides": overrides,
        },
        "options": {
            "view": {"id": "fit", "lat": 0, "lon": 0, "zoom": 2, "allLayers": True, "padding": 20},
            "controls": {"showZoom": True, "mouseWheelZoom": True, "showAttribution": True},
            "basemap": {"type": "default", "name": "Basemap", "config": {}},
            "layers": [
                {
                    "type": "markers",
                    "name": "Things",
                    "tooltip": True,
                    "location": {"mode": "coords", "latitude": "latitude", "longitude": "longitude"},
                    "config": {
                        "showLegend": True,
                        "style": {
                            "size": {"fixed": 10},
                            "color": color,
                            "opacity": 0.8,
                            "symbol": {"mode": "fixed", "fixed": "img/icons/marker/circle.svg"},
                            "text": {"mode": "field", "field": "device", "fixed": ""},
                            "textConfig": {"fontSize": 12, "offsetX": 0, "offsetY": -14},
                        },
                    },
                }
            ],
            "tooltip": {"mode": "details"},
        },
    }
    return panel


def _split(stream: Stream) -> tuple[str, str]:
    """(column, row) of a datastream on the board: `wall1_temperature` → ("Wall1", "temperature")."""
    suffix = "_" + stream.property_id
    if stream.value.endswith(suffix):
        return humanise(stream.value[: -len(suffix)]), stream.property_id
    return stream.name, stream.property_id


BOARD_CARD = (150, 56)  # width, height in canvas pixels
BOARD_LABEL = 28


def board_panel(config: Config, key: str, thing: Thing, grid: tuple[int, int, int, int]) -> dict[str, Any]:
    """A Canvas of the board: columns by the value name's prefix, rows by observed property."""
    model = config.model
    shown = streams(model, thing)
    columns = list(dict.fromkeys(_split(s)[0] for s in shown))
    rows = list(dict.fromkeys(_split(s)[1] for s in shown))
    card_w, card_h = BOARD_CARD
    gap = 12
    elements: list[dict[str, Any]] = []

    def place(left: int, top: int, width: int, height: int) -> dict[str, Any]:
        return {
            "placement": {"left": left, "top": top, "width": width, "height": height},
            "constraint": {"horizontal": "left", "vertical": "top"},
        }

    def text(name: str, words: str, left: int, top: int, width: int, height: int) -> dict[str, Any]:
        return {
            "type": "text",
            "name": name,
            "config": {
                "text": {"mode": "fixed", "fixed": words},
                "color": {"fixed": "text"},
                "size": 14,
                "align": "center",
                "valign": "middle",
            },
            "background": {"color": {"fixed": "transparent"}},
            "border": {"color": {"fixed": "transparent"}},
            **place(left, top, width, height),
        }

    label_w = 110
    elements.append(text("title", title(thing), 0, 0, label_w + len(columns) * (card_w + gap), BOARD_LABEL))
    for c, column in enumerate(columns):
        left = label_w + c * (card_w + gap)
        elements.append(text(f"column {column}", column, left, BOARD_LABEL, card_w, BOARD_LABEL))
    for r, row in enumerate(rows):
        top = 2 * BOARD_LABEL + r * (card_h + gap)
        label = model.observed_properties[row].name
        elements.append(text(f"row {row}", label, 0, top, label_w - gap, card_h))
    overrides = []
    for stream in shown:
        column, row = _split(stream)
        left = label_w + columns.index(column) * (card_w + gap)
        top = 2 * BOARD_LABEL + rows.index(row) * (card_h + gap)
        elements.append(
            {
                "type": "metric-value",
                "name": stream.value,
                "config": {
                    "text": {"mode": "field", "field": stream.value, "fixed": ""},
                    "color": {"field": stream.value, "fixed": "text"},
                    "size": 22,
                    "align": "center",
                    "valign": "middle",
                },
                "background": {"color": {"fixed": "transparent"}},
                "border": {"color": {"field": stream.value, "fixed": "dark-green"}, "width": 2},
                **place(left, top, card_w, card_h),
            }
        )
        overrides.append(
            {
                "matcher": {"id": "byName", "options": stream.value},
                "properties": [
                    *_properties(stream.unit, stream.property_id),
                    {"id": "displayName", "value": stream.name},
                ],
            }
        )
    panel = _panel(
        "canvas",
        f"Board · {title(thing)}",
        f"The latest reading of each datastream of {title(thing)} ({thing.devices}) where it sits on"
        " the board, with the model's units.",
        grid,
    )
    height = 2 * BOARD_LABEL + len(rows) * (card_h + gap)
    panel |= {
        "targets": [
            _target(
                "board", board_query(config.ingestion.measurement, key, [s.value for s in shown]), "table"
            )
        ],
        "fieldConfig": {"defaults": {"color": {"mode": "thresholds"}}, "overrides": overrides},
        "options": {
            "inlineEditing": False,
            "showAdvancedTypes": True,
            "panZoom": False,
            "infinitePan": False,
            "root": {
                "type": "frame",
                "name": "Element root",
                "elements": elements,
                "background": {"color": {"fixed": "transparent"}},
                "border": {"color": {"fixed": "dark-green"}},
                "placement": {"left": 0, "top": 0, "width": 100, "height": height},
                "constraint": {"horizontal": "left", "vertical": "top"},
            },
        },
    }
    return panel


def title(thing: Thing) -> str:
    """A thing entry's name for a panel title: `Simulated board {device}` → `Simulated board sim-*`."""
    return thing.name.replace("{device}", thing.devices)


def _one_device(thing: Thing) -> bool:
    return not thing.is_pattern()


def latest_panel(config: Config, key: str, thing: Thing, grid: tuple[int, int, int, int]) -> dict[str, Any]:
    shown = streams(config.model, thing)
    device = "" if _one_device(thing) else "$tag_device · "
    panel = _panel(
        "stat",
        f"Latest · {title(thing)}",
        f"The newest value of each datastream of thing '{key}' ({thing.devices}), named and in the"
        " units of the model (config.yaml model.things).",
        grid,
    )
    panel |= {
        "targets": [
            _target(s.value, latest_query(config.ingestion.measurement, key, s.value), alias=device + s.name)
            for s in shown
        ],
        "fieldConfig": {"defaults": {}, "overrides": [_stream_override(s) for s in shown]},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "none",
            "textMode": "value_and_name",
            "orientation": "auto",
            "justifyMode": "auto",
            "wideLayout": True,
            "showPercentChange": False,
        },
    }
    return panel


def history_panel(config: Config, key: str, thing: Thing, grid: tuple[int, int, int, int]) -> dict[str, Any]:
    shown = streams(config.model, thing)
    device = "" if _one_device(thing) else "$tag_device · "
    panel = _panel(
        "timeseries",
        f"History · {title(thing)}",
        f"Each datastream of thing '{key}' over time (mean per interval), in the model's units.",
        grid,
    )
    overrides = []
    for stream in shown:
        override = _stream_override(stream)
        override["properties"] = [p for p in override["properties"] if p["id"] == "unit"]
        overrides.append(override)
    panel |= {
        "targets": [
            _target(s.value, history_query(config.ingestion.measurement, key, s.value), alias=device + s.name)
            for s in shown
        ],
        "fieldConfig": {
            "defaults": {
                "custom": {"drawStyle": "line", "lineWidth": 1, "spanNulls": False, "showPoints": "never"}
            },
            "overrides": overrides,
        },
        "options": {
            "legend": {
                "displayMode": "table",
                "placement": "right",
                "calcs": ["lastNotNull", "min", "max"],
                "showLegend": True,
            },
            "tooltip": {"mode": "multi", "sort": "none"},
        },
    }
    return panel


def _generic_overrides(model: ModelConfig) -> list[dict[str, Any]]:
    return [
        {
            "matcher": {"id": "byRegexp", "options": f".*{pid}$"},
            "properties": _properties(prop.unit, pid),
        }
        for pid, prop in model.observed_properties.items()
    ]


def generic_panels(config: Config, y: int) -> list[dict[str, Any]]:
    """The panels chosen by the `device` and `sensor` variables (kept from the hand-made dashboard)."""
    measurement = config.ingestion.measurement
    overrides = _generic_overrides(config.model)
    latest = _panel(
        "stat",
        "Latest reading",
        "The newest value of each sensor of the selected devices, coloured by its thresholds.",
        (0, y, 24, 6),
    )
    latest |= {
        "targets": [
            _target(
                "A",
                f'SELECT last(/^$sensor$/) FROM "{measurement}" WHERE "device" =~ /^$device$/ AND $timeFilter'
                ' GROUP BY "device"',
                alias="$tag_device $col",
            )
        ],
        "fieldConfig": {"defaults": {}, "overrides": overrides},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "area",
            "textMode": "value_and_name",
            "orientation": "auto",
            "justifyMode": "auto",
            "wideLayout": True,
            "showPercentChange": False,
        },
    }
    readings = _panel(
        "timeseries",
        "Readings",
        "Live and historical values per device and sensor (mean per interval); dashed lines are the"
        " thresholds.",
        (0, y + 6, 24, 10),
    )
    readings |= {
        "targets": [
            _target(
                "A",
                f'SELECT mean(/^$sensor$/) FROM "{measurement}" WHERE "device" =~ /^$device$/ AND $timeFilter'
                ' GROUP BY time($__interval), "device" fill(none)',
                alias="$tag_device $col",
            )
        ],
        "fieldConfig": {
            "defaults": {
                "custom": {
                    "thresholdsStyle": {"mode": "dashed"},
                    "drawStyle": "line",
                    "lineWidth": 1,
                    "spanNulls": False,
                    "showPoints": "never",
                }
            },
            "overrides": overrides,
        },
        "options": {
            "legend": {
                "displayMode": "table",
                "placement": "right",
                "calcs": ["lastNotNull", "min", "max"],
                "showLegend": True,
            },
            "tooltip": {"mode": "multi", "sort": "none"},
        },
    }
    last = _panel(
        "table",
        "Last reading per device",
        "Sequence number and boot id of each device's newest reading: a new boot id is a publisher"
        " restart, a gap in seq within one boot is lost data.",
        (0, y + 16, 24, 6),
    )
    last |= {
        "targets": [
            _target(
                "A",
                f'SELECT last("seq") AS "seq", last("boot") AS "boot" FROM "{measurement}"'
                ' WHERE "device" =~ /^$device$/ AND $timeFilter GROUP BY "device"',
                "table",
            )
        ],
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {"showHeader": True, "cellHeight": "sm"},
    }
    return [latest, readings, last]


def _variables(measurement: str) -> list[dict[str, Any]]:
    def variable(name: str, label: str, query: str, regex: str) -> dict[str, Any]:
        return {
            "name": name,
            "label": label,
            "type": "query",
            "datasource": INFLUX,
            "query": query,
            "definition": query,
            "refresh": 2,
            "regex": regex,
            "multi": True,
            "includeAll": True,
            "sort": 1,
            "hide": 0,
            "current": {"text": ["All"], "value": ["$__all"]},
            "options": [],
        }

    return [
        variable(
            "device",
            "Device",
            f'SHOW TAG VALUES FROM "{measurement}" WITH KEY = "device" WHERE "device" !~ /^_/',
            "",
        ),
        variable(
            "sensor", "Sensor", f'SHOW FIELD KEYS FROM "{measurement}"', "/^(?!(?:seq|boot|probe)$).+$/"
        ),
    ]


def alert_annotations(measurement: str) -> list[dict[str, Any]]:
    """Every alert transition of the devices chosen in `$device` (the alerting stage's points in
    `measurement`) as an annotation on the time axis of every graph; text and tags come from the
    point's columns."""
    query = (
        f'SELECT "text", "rule", "state", "severity", "device" FROM "{measurement}"'
        ' WHERE "device" =~ /^$device$/ AND $timeFilter'
    )
    return [
        {
            "name": "Alerts",
            "datasource": INFLUX,
            "enable": True,
            "hide": False,
            "iconColor": "red",
            "query": query,
            "textColumn": "text",
            "tagsColumn": "rule,state,severity,device",
        }
    ]


def alerts_panel(measurement: str, grid: tuple[int, int, int, int]) -> dict[str, Any]:
    """The latest alert transitions of the devices chosen in `$device`, newest first: what is
    pending, firing, resolved and where."""
    query = (
        'SELECT "device", "rule", "severity", "state", "value", "threshold", "text"'
        f' FROM "{measurement}" WHERE "device" =~ /^$device$/ AND $timeFilter ORDER BY time DESC LIMIT 100'
    )
    panel = _panel(
        "table",
        "Alerts",
        "Transitions of the alerting stage's rules (alerting.rules in config.yaml), newest first:"
        " pending (condition true, for_s not yet over), firing, resolved, ok (a pending alert ended).",
        grid,
    )
    panel["targets"] = [_target("alerts", query, "table")]
    panel["fieldConfig"] = {
        "defaults": {},
        "overrides": [
            {
                "matcher": {"id": "byName", "options": "state"},
                "properties": [
                    {"id": "custom.cellOptions", "value": {"type": "color-text"}},
                    {
                        "id": "mappings",
                        "value": [
                            {
                                "type": "value",
                                "options": {
                                    "firing": {"color": "red", "index": 0},
                                    "pending": {"color": "orange", "index": 1},
                                    "resolved": {"color": "green", "index": 2},
                                    "ok": {"color": "green", "index": 3},
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    panel["options"] = {"showHeader": True, "sortBy": [{"displayName": "Time", "desc": True}]}
    return panel


def digital_twin(config: Config) -> dict[str, Any]:
    """The dashboard for `config`: its model's things, datastreams, units and locations."""
    model = config.model
    panels: list[dict[str, Any]] = []
    boards = [(key, thing) for key, thing in model.things.items() if _one_device(thing) and thing.datastreams]
    top = 12  # the map and the boards: two per row of the grid, 12 high
    slots: list[dict[str, Any] | None] = [map_panel(config, (0, 0, 24 if not boards else 12, top))]
    slots = [slot for slot in slots if slot is not None]
    for key, thing in boards:
        i = len(slots)
        slots.append(board_panel(config, key, thing, (12 * (i % 2), top * (i // 2), 12, top)))
    panels += [slot for slot in slots if slot is not None]
    y = top * -(-len(slots) // 2)
    alerts = config.alerting.measurement
    if alerts is not None:
        panels.append(alerts_panel(alerts, (0, y, 24, 8)))
        y += 8
    for key, thing in model.things.items():
        panels.append(latest_panel(config, key, thing, (0, y, 24, 5)))
        panels.append(history_panel(config, key, thing, (0, y + 5, 24, 8)))
        y += 13
    panels += generic_panels(config, y)
    for number, panel in enumerate(panels, 1):
        panel["id"] = number
    return {
        "uid": "twinpipe-twin",
        "title": "twinpipe · Digital twin",
        "description": "Generated from config.yaml's model by `python -m twinpipe dashboard`: do not edit"
        " by hand. The things on a map, each board, the latest value and history of every datastream"
        " in the model's units; below, readings by device and sensor.",
        "tags": ["twinpipe", "twin"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 41,
        "version": 1,
        "refresh": "5s",
        "time": {"from": "now-15m", "to": "now"},
        "timezone": "browser",
        "timepicker": {},
        "links": [
            {
                "type": "dashboards",
                "tags": ["twinpipe"],
                "asDropdown": False,
                "title": "twinpipe",
                "icon": "external link",
                "includeVars": False,
                "keepTime": True,
                "targetBlank": False,
                "tooltip": "",
                "url": "",
            }
        ],
        "annotations": {"list": alert_annotations(alerts) if alerts is not None else []},
        "templating": {"list": _variables(config.ingestion.measurement)},
        "panels": panels,
    }


def render(config: Config) -> str:
    """The dashboard's file content: indented JSON, keys in a fixed order, a final newline."""
    return json.dumps(digital_twin(config), indent=2, ensure_ascii=False) + "\n"
