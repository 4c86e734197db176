"""grafana/: dashboards valid against Grafana's own JSON schema, datasources provisioned for every uid
a panel names, and provisioning that keeps secrets out of the files. (That every panel's query
returns data is checked after a pipeline run, in tests/integration/test_observability.py.)"""

from __future__ import annotations

import copy
import json
import time
import urllib.request
import uuid
from pathlib import Path

import jsonschema
import pytest
import yaml

from devstack.stack import LocalStack
from tests.dashboards import (
    DASHBOARDS,
    INFLUX_UID,
    PROMETHEUS_UID,
    ROOT,
    TWIN_DASHBOARD,
    load,
    queries,
    regex_value,
    substitute,
    variable_values,
    variables,
)
from twin_state import lifecycle
from twin_state.influx_out import setting_line, transition_line
from twin_state.lifecycle import FORWARD
from twin_state.store import SettingChange

SCHEMA = ROOT / "build" / "grafana-dashboard.schema.json"
PROVISIONING = ROOT / "grafana" / "provisioning"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    assert SCHEMA.is_file(), f"{SCHEMA} is missing: `make grafana-schema` generates it (make test does)"
    return jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))


def datasources() -> dict[str, dict]:
    document = yaml.safe_load((PROVISIONING / "datasources" / "twinpipe.yml").read_text())
    return {source["uid"]: source for source in document["datasources"]}


def test_every_dashboard_has_a_unique_uid() -> None:
    uids = sorted(load(path)["uid"] for path in DASHBOARDS)
    assert uids == [
        "twinpipe-commands",
        "twinpipe-forecasts",
        "twinpipe-health",
        "twinpipe-latency",
        "twinpipe-twin",
    ]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_validates_against_grafana_schema(
    path: Path, validator: jsonschema.Draft7Validator
) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(load(path))]
    assert not errors, errors


def test_the_schema_check_catches_a_broken_dashboard(validator: jsonschema.Draft7Validator) -> None:
    broken = copy.deepcopy(load(DASHBOARDS[0]))
    broken["panels"][0]["gridPos"]["w"] = "wide"
    broken["refresh"] = 5
    assert len(list(validator.iter_errors(broken))) == 2


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_datasource_a_panel_or_variable_names_is_provisioned(path: Path) -> None:
    dashboard = load(path)
    provisioned = datasources()
    named = [(p["title"], p["datasource"]) for p in dashboard["panels"]]
    named += [(t["refId"], t["datasource"]) for p in dashboard["panels"] for t in p["targets"]]
    named += [(v["name"], v["datasource"]) for v in variables(dashboard)]
    for where, ref in named:
        assert ref["uid"] in provisioned, where
        assert ref["type"] == provisioned[ref["uid"]]["type"], where
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    assert list(queries(dashboard)), "every dashboard queries something"


def test_influxdb_datasource_uses_influxql_with_a_token_from_the_environment() -> None:
    influx = datasources()[INFLUX_UID]
    assert "version" not in influx["jsonData"], "InfluxQL is the default query language; Flux is not used"
    assert influx["jsonData"]["httpHeaderName1"] == "Authorization"
    assert influx["secureJsonData"]["httpHeaderValue1"] == "Token ${INFLUXDB_TOKEN}"
    assert influx["jsonData"]["dbName"] == "${INFLUXDB_BUCKET}"
    assert datasources()[PROMETHEUS_UID]["isDefault"] is True


def test_dashboard_providers_load_the_folders_compose_mounts_each_uid_once() -> None:
    """The hand-written dashboards come from the repository, the Digital twin from the volume the
    twin-dashboard service writes (tests/test_deploy.py checks the writing side); the repository's
    generated copy stays out of Grafana, or two files would carry the uid twinpipe-twin."""
    document = yaml.safe_load((PROVISIONING / "dashboards" / "twinpipe.yml").read_text())
    providers = {provider["name"]: provider for provider in document["providers"]}
    assert set(providers) == {"twinpipe", "twinpipe-twin"}
    grafana = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["grafana"]
    mounts = grafana["volumes"]
    assert f"./grafana/dashboards:{providers['twinpipe']['options']['path']}:ro" in mounts
    twin = providers["twinpipe-twin"]["options"]["path"]
    assert f"twin-dashboard:{twin}:ro" in mounts
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{twin}/{TWIN_DASHBOARD.name}"
    paths = [provider["options"]["path"] for provider in providers.values()]
    assert not any(a != b and a.startswith(f"{b}/") for a in paths for b in paths), "nested folders"
    hand_written = [load(path)["uid"] for path in (ROOT / "grafana" / "dashboards").glob("*.json")]
    assert load(TWIN_DASHBOARD)["uid"] not in hand_written
    assert not any(mount.startswith("./grafana/twin") for mount in mounts)


def test_every_commands_dashboard_query_returns_data_from_the_twin_states_points(stack: LocalStack) -> None:
    """The Commands dashboard on the real InfluxDB: a command's whole lifecycle and an expired one, as
    points made by the twin_state stage's own code (lifecycle → twin_state.influx_out lines), then each
    query with its variables substituted as Grafana does: for every device and for one."""
    bucket = f"commands{uuid.uuid4().hex[:8]}"
    stack.influx.add_bucket(bucket)
    now = time.time_ns() - 60 * 10**9
    command = {"id": uuid.uuid4().hex, "device": "sim-1", "settings": {"heater": True}, "desired_version": 1}
    command |= {"v": 1, "created_ns": now, "expires_ns": now + 30 * 10**9}
    state, transitions = lifecycle.queue(lifecycle.new_state("sim-1"), command, now)
    for i, name in enumerate(["sent", "delivered", "written", "acknowledged"], start=1):
        event = {"id": command["id"], "device": "sim-1", "state": name, "time_ns": now + i * 10**8}
        event |= {"by": "publisher", "detail": "", "reported": {"heater": True}}
        state, more = lifecycle.apply_event(state, event)
        transitions += more
    lost = {**command, "id": uuid.uuid4().hex, "settings": {"heater": False}, "desired_version": 2}
    state, more = lifecycle.queue(state, lost, now + 10**9)
    transitions += more + lifecycle.expire(state, lost["expires_ns"])[1]
    changes = [
        SettingChange("sim-1", "desired", "heater", True, now),
        SettingChange("sim-1", "reported", "heater", True, now + 4 * 10**8),
        SettingChange("sim-1", "desired", "heater", False, now + 10**9),
    ]
    lines = [transition_line("twin_commands", t) for t in transitions]
    lines += [setting_line("twin_settings", c) for c in changes]
    request = urllib.request.Request(
        f"{stack.influxd.url}/write?db={bucket}&precision=ns", data="\n".join(lines).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 204
    assert [t.state for t in transitions] == [*FORWARD, "queued", "expired"]

    dashboard = load(ROOT / "grafana" / "dashboards" / "commands.json")
    (variable,) = variables(dashboard)
    devices = variable_values(
        variable, lambda q: [v[1] for s in stack.influxd.query(q, bucket) for v in s["values"]]
    )
    assert devices == ["sim-1"]
    empty = []
    for chosen in ({"device": variable["allValue"]}, {"device": regex_value(devices, INFLUX_UID)}):
        for query in queries(dashboard):
            series = stack.influxd.query(substitute(query.text, chosen), bucket)
            if not series:
                empty.append(f"{query.panel}: {query.text}")
    assert not empty, empty
    journal = stack.influxd.query(
        substitute(
            next(q for q in queries(dashboard) if q.panel == "Command journal").text, {"device": "sim-1"}
        ),
        bucket,
    )[0]
    rows = [dict(zip(journal["columns"], values, strict=True)) for values in journal["values"]]
    assert [r["state"] for r in rows][:2] == ["expired", "queued"] and rows[-1]["state"] == "queued"
    assert rows[0]["detail"].startswith("not acknowledged before expires_ns")
