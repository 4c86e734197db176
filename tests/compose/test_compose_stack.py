"""The compose stack for real: `make up`, data through every stage, `make watch`, `make down`.

The project's docker-compose.yml and Dockerfile run unchanged on a real Docker engine; where images
cannot be pulled (CI), docker-compose.standins.yml swaps the upstream services' images for stand-ins
built from Debian packages. The tests run in file order on one compose project of their own.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from devstack.process import poll
from tests.compose.conftest import UPSTREAM, ComposeRun

ROOT = Path(__file__).resolve().parents[2]
STAGES = (
    "publisher",
    "mqtt_kafka_bridge",
    "influx_ingestion",
    "latency_probe",
    "sensorthings_api",
    "alerting",
)
pytestmark = pytest.mark.timeout(900)  # the first test builds every image from nothing


def lines(text: str) -> set[str]:
    return {line for line in text.splitlines() if line.strip()}


def own(compose_run: ComposeRun) -> str:
    """The filter for what the run's compose project made (containers, volumes, built images)."""
    return f"label=com.docker.compose.project={compose_run.project}"


def untagged(compose_run: ComposeRun) -> set[str]:
    """The run's project's untagged images: another project's on the same engine are not counted."""
    return lines(
        compose_run.engine.docker(
            "images", "--quiet", "--filter", "dangling=true", "--filter", own(compose_run)
        ).stdout
    )


def test_make_up_completes_the_env_and_waits_until_every_service_is_healthy(compose_run: ComposeRun) -> None:
    result = compose_run.make("up")
    assert result.returncode == 0, f"make up failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    assert "filled the empty MQTT_PASSWORD" in result.stdout and "added the keys" in result.stdout
    assert re.fullmatch(r"[0-9a-f]{48}", compose_run.env_value("MQTT_PASSWORD"))
    services = compose_run.services()
    for name in STAGES:
        assert services[name]["State"] == "running" and services[name]["Health"] == "healthy", services[name]
    for name in ("mosquitto", "kafka", "influxdb", "prometheus", "alertmanager"):
        assert services[name]["Health"] == "healthy", services[name]
    assert services["mosquitto-passwd"]["State"] == "exited" and services["mosquitto-passwd"]["ExitCode"] == 0
    assert ("grafana" in services) == UPSTREAM, "no Grafana stand-in: left out of the stand-in run"
    assert ("twin-dashboard" in services) == UPSTREAM, "left out with Grafana, the one waiting for it"
    if UPSTREAM:
        twin = services["twin-dashboard"]
        assert twin["State"] == "exited" and twin["ExitCode"] == 0, twin


def test_the_twin_dashboard_service_writes_the_model_s_dashboard_where_grafana_reads_it(
    compose_run: ComposeRun,
) -> None:
    """The one-shot that gives Grafana the Digital twin from the config.yaml the stages read, into a
    fresh named volume (writable only if the image made its mount point the stage user's), read
    back as Grafana reads it: uid 472, read-only. The stand-in run has no Grafana and so no `up`
    of it: the service runs on its own, as `up` would run it."""
    if not UPSTREAM:
        result = compose_run.compose("run", "--rm", "-T", "twin-dashboard")
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert "written from the model" in result.stdout + result.stderr
    shown = compose_run.engine.docker(
        "run",
        "--rm",
        "--user",
        "472:0",
        "--volume",
        f"{compose_run.project}_twin-dashboard:/var/lib/grafana-twin:ro",
        "--entrypoint",
        "cat",
        compose_run.environment["TWINPIPE_IMAGE"],
        "/var/lib/grafana-twin/digital-twin.json",
    )
    assert shown.stdout == (ROOT / "grafana" / "twin" / "digital-twin.json").read_text()


def test_the_image_is_built_once_with_pinned_dependencies_and_no_untagged_leftovers(
    compose_run: ComposeRun,
) -> None:
    docker = compose_run.engine.docker
    assert not untagged(compose_run), "untagged image of the run's project left"
    image = compose_run.environment["TWINPIPE_IMAGE"]
    assert image.startswith("twinpipe-test:"), "the run never retags a user's twinpipe:0.1.0"
    assert {service["Image"] for name, service in compose_run.services().items() if name in STAGES} == {image}
    # `make up` labels each service using a secret with its hash, so a changed secret recreates it.
    for service, secret in (("publisher", "mqtt_password"), ("mqtt_kafka_bridge", "mqtt_bridge_password")):
        password = hashlib.sha256(compose_run.env_value(secret.upper()).encode()).hexdigest()[:16]
        container = f"{compose_run.project}-{service}-1"
        labels = json.loads(docker("inspect", "--format", "{{json .Config.Labels}}", container).stdout)
        assert labels[f"io.twinpipe.secret.{secret}.sha256"] == password, service
    frozen = docker("run", "--rm", "--entrypoint", "pip", image, "freeze").stdout
    installed = {line.lower() for line in lines(frozen) if not line.startswith("twinpipe")}
    pinned = {
        line.lower()
        for line in lines((ROOT / "image-constraints.txt").read_text())
        if not line.startswith("#")
    }
    assert installed == pinned


def test_published_ports_listen_on_loopback_only(compose_run: ComposeRun) -> None:
    published = [
        publisher
        for record in compose_run.services().values()
        for publisher in record.get("Publishers") or []
        if publisher.get("PublishedPort")
    ]
    assert {p["PublishedPort"] for p in published} >= {
        compose_run.ports[key]
        for key in ("MQTT_PORT", "INFLUXDB_PORT", "PROMETHEUS_PORT", "SENSORTHINGS_PORT")
    }
    assert {p["URL"] for p in published} == {"127.0.0.1"}


def influx_rows(compose_run: ComposeRun, influxql: str) -> list[dict]:
    """InfluxQL through the published InfluxDB port with the stack's token, as Grafana asks."""
    query = urllib.parse.urlencode({"db": compose_run.env_value("INFLUXDB_BUCKET"), "q": influxql})
    request = urllib.request.Request(
        f"http://127.0.0.1:{compose_run.ports['INFLUXDB_PORT']}/query?{query}",
        headers={"Authorization": f"Token {compose_run.env_value('INFLUXDB_TOKEN')}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        result = json.load(response)["results"][0]
    return [
        dict(zip(series["columns"], values, strict=True))
        for series in result.get("series", [])
        for values in series["values"]
    ]


def test_simulated_readings_reach_influxdb_without_gaps(compose_run: ComposeRun) -> None:
    rows = poll(
        lambda: influx_rows(
            compose_run, """SELECT "seq", "boot" FROM "telemetry" WHERE "device" = 'sim-1'"""
        ),
        lambda found: len(found) >= 15,
        timeout_s=90,
        what="15 readings of the simulated board sim-1 in InfluxDB",
        interval_s=1,
    )
    by_boot: dict[str, list[int]] = {}
    for row in rows:
        by_boot.setdefault(row["boot"], []).append(int(row["seq"]))
    for boot, seqs in by_boot.items():
        assert sorted(seqs) == list(range(len(seqs))), f"boot {boot}: gaps or duplicates in {sorted(seqs)}"


def test_the_sensorthings_api_serves_the_latest_reading_of_every_datastream(compose_run: ComposeRun) -> None:
    query = urllib.parse.quote("$expand=Observations($top=1;$orderby=phenomenonTime desc)", safe="$=()")
    url = f"http://127.0.0.1:{compose_run.ports['SENSORTHINGS_PORT']}/v1.1/Datastreams?{query}"

    def latest() -> dict[str, list[dict]]:
        with urllib.request.urlopen(url, timeout=10) as response:
            return {d["@iot.id"]: d["Observations"] for d in json.load(response)["value"]}

    found = poll(
        latest, lambda streams: bool(streams.get("sim-1:temperature")), 60, "sim-1 in SensorThings", 1
    )
    [observation] = found["sim-1:temperature"]
    rows = influx_rows(compose_run, 'SELECT LAST("temperature") FROM "telemetry" WHERE "device" = \'sim-1\'')
    assert isinstance(observation["result"], float) and rows
    assert observation["@iot.id"].startswith("sim-1:temperature:")


def test_make_watch_shows_the_stream(compose_run: ComposeRun) -> None:
    result = compose_run.make("watch", "WATCH_ARGS=--device sim-1 --from-beginning --count 5", timeout_s=120)
    assert result.returncode == 0, result.stderr[-3000:]
    shown = [line for line in result.stdout.splitlines() if " sim-1 #" in line]
    assert len(shown) == 5, result.stdout[-3000:]
    assert [int(re.search(r"#(\d+)", line).group(1)) for line in shown] == list(range(5))


def test_mosquitto_logs_no_line_per_healthcheck_or_autosave(compose_run: ComposeRun) -> None:
    docker = compose_run.engine.docker
    container = f"{compose_run.project}-mosquitto-1"

    def healthchecks() -> int:
        state = json.loads(docker("inspect", "--format", "{{json .State.Health}}", container).stdout)
        return sum(1 for check in state["Log"] if check["ExitCode"] == 0)

    poll(
        healthchecks,
        lambda count: count >= 3,
        timeout_s=60,
        what="three Mosquitto healthchecks",
        interval_s=1,
    )
    log = compose_run.compose("logs", "--no-log-prefix", "mosquitto").stdout
    noise = [
        line for line in log.splitlines() if re.search(r"New (client|connection)|disconnected|Saving", line)
    ]
    assert not noise, noise[:5]


def test_the_password_file_step_refuses_an_empty_mqtt_password(compose_run: ComposeRun) -> None:
    result = compose_run.compose("run", "--rm", "--no-deps", "mosquitto-passwd", MQTT_PASSWORD="")
    assert result.returncode != 0
    assert "MQTT_PASSWORD is empty" in result.stderr + result.stdout


def test_make_up_applies_a_changed_mqtt_password_to_every_service_using_it(compose_run: ComposeRun) -> None:
    docker = compose_run.engine.docker

    def container_id(service: str) -> str:
        return docker("inspect", "--format", "{{.Id}}", f"{compose_run.project}-{service}-1").stdout.strip()

    before = {name: container_id(name) for name in ("mosquitto", "publisher", "influx_ingestion")}
    text = compose_run.env_file.read_text()
    old = compose_run.env_value("MQTT_PASSWORD")
    compose_run.env_file.write_text(
        text.replace(f"MQTT_PASSWORD={old}", "MQTT_PASSWORD='changed by the test'")
    )
    result = compose_run.make("up")
    assert result.returncode == 0, f"make up failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert container_id("mosquitto") != before["mosquitto"], "Mosquitto kept the old password"
    assert container_id("publisher") != before["publisher"], "the publisher kept the old one"
    assert container_id("influx_ingestion") == before["influx_ingestion"], "no MQTT password: left running"
    services = compose_run.services()
    for name in STAGES:
        assert services[name]["State"] == "running" and services[name]["Health"] == "healthy", services[name]


def test_make_up_names_a_service_that_does_not_become_healthy_and_shows_its_log(
    compose_run: ComposeRun, tmp_path: Path
) -> None:
    broken = tmp_path / "broken-probe.yml"
    broken.write_text(
        "services:\n  latency_probe:\n    environment:\n"
        "      TWINPIPE__INFLUXDB__TOKEN_FILE: /run/secrets/not-given\n"
    )
    compose_run.environment["COMPOSE_FILE"] += f":{broken}"
    try:
        result = compose_run.make("up", "UP_TIMEOUT_S=120")
    finally:
        compose_run.environment["COMPOSE_FILE"] = compose_run.environment["COMPOSE_FILE"].rsplit(":", 1)[0]
    assert result.returncode != 0
    assert "--- latency_probe is" in result.stderr
    assert "influxdb.token_file: cannot read file" in result.stderr, result.stderr[-3000:]
    assert "--- publisher" not in result.stderr, "healthy services are not reported"


def test_make_down_stops_everything_and_keeps_only_the_data_volumes(compose_run: ComposeRun) -> None:
    docker = compose_run.engine.docker
    # The volumes the run's containers mount (anonymous ones carry no compose label): another
    # project's on the same engine are not counted.
    containers = lines(docker("ps", "--all", "--quiet", "--filter", own(compose_run)).stdout)
    mounted: set[str] = set()
    for line in docker("inspect", "--format", "{{json .Mounts}}", *containers).stdout.splitlines():
        mounted |= {mount["Name"] for mount in json.loads(line) if mount.get("Type") == "volume"}
    assert f"{compose_run.project}_influxdb-data" in mounted
    started = time.monotonic()
    result = compose_run.make("down", timeout_s=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert time.monotonic() - started < 120
    label = own(compose_run)
    assert not lines(docker("ps", "--all", "--quiet", "--filter", label).stdout), "containers left"
    assert not lines(docker("network", "ls", "--quiet", "--filter", label).stdout), "network left"
    volumes = lines(docker("volume", "ls", "--quiet").stdout)
    anonymous = {v for v in mounted & volumes if not v.startswith(f"{compose_run.project}_")}
    assert not anonymous, f"anonymous volumes left by make down: {anonymous}"
    assert {f"{compose_run.project}_influxdb-data", f"{compose_run.project}_publisher-spool"} <= volumes
