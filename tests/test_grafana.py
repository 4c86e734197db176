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

from tests.dashboards import (
    DASHBOARDS,
    INFLUX_UID,
    PROMETHEUS_UID,
    ROOT,
    TWIN_DASHBOARD,
    load,
    queries,
    variables,
)

SCHEMA = ROOT / "build" / "grafana-dashboard.schema.json"
PROVISIONING = ROOT / "grafana" / "provisioning"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    assert SCHEMA.is_file(), f"{SCHEMA} is missing: `make grafana-schema` generates it (make test does)"
    return jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))


def datasources() -> dict[str, dict]:
    document = yaml.safe_load((PROVISIONING / "datasources" / "twinpipe.yml").read_text())
    return {source["uid"]: source for source in document["datasources"]}


def test_four_dashboards_with_unique_uids() -> None:
    uids = sorted(load(path)["uid"] for path in DASHBOARDS)
    assert uids == ["twinpipe-forecasts", "twinpipe-health", "twinpipe-latency", "twinpipe-twin"]


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
