"""grafana/: dashboards valid against Grafana's own JSON schema, datasources provisioned for every uid
a panel names, and provisioning that keeps secrets out of the files. (That every panel's query
returns data is checked after a pipeline run, in tests/integration/test_observability.py.)"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.dashboards import DASHBOARDS, INFLUX_UID, PROMETHEUS_UID, ROOT, load, queries, variables

SCHEMA = ROOT / "build" / "grafana-dashboard.schema.json"
PROVISIONING = ROOT / "grafana" / "provisioning"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    assert SCHEMA.is_file(), f"{SCHEMA} is missing: `make grafana-schema` generates it (make test does)"
    return jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))


def datasources() -> dict[str, dict]:
    document = yaml.safe_load((PROVISIONING / "datasources" / "twinpipe.yml").read_text())
    return {source["uid"]: source for source in document["datasources"]}


def test_three_dashboards_with_unique_uids() -> None:
    titles = {load(path)["uid"]: load(path)["title"] for path in DASHBOARDS}
    assert set(titles) == {"twinpipe-twin", "twinpipe-health", "twinpipe-latency"}


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


def test_dashboard_provider_loads_the_folder_compose_mounts() -> None:
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "twinpipe.yml").read_text())["providers"][0]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
