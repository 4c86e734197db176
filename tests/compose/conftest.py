"""Fixtures of the compose test: an engine, the images, and a compose project of the test's own.

`TWINPIPE_COMPOSE_IMAGES=upstream` runs the same test on the real upstream images (pulled by the
engine, Grafana included) instead of the stand-ins of docker-compose.standins.yml.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devstack import compose
from devstack.process import free_port
from tests.compose import engine as engines
from tests.compose.images import PYTHON, Builder

ROOT = Path(__file__).resolve().parents[2]
OVERRIDE = "tests/compose/docker-compose.standins.yml"
UPSTREAM = os.environ.get("TWINPIPE_COMPOSE_IMAGES", "standins") == "upstream"
TIMINGS: dict[str, float] = {}  # step → seconds, shown at the end of the pytest run


@dataclass
class ComposeRun:
    """One compose project, driven through the Makefile's targets like a user drives it."""

    engine: engines.Engine
    project: str
    env_file: Path
    ports: dict[str, int]
    environment: dict[str, str] = field(default_factory=dict)

    def make(self, target: str, *args: str, timeout_s: float = 900) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        result = subprocess.run(
            [
                "make",
                "--no-print-directory",
                target,
                f"ENV_FILE={self.env_file}",
                f"COMPOSE={compose.binary()}",
                *args,
            ],
            cwd=ROOT,
            env=self.environment,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )
        step = f"make {target}"
        while step in TIMINGS:
            step += " again"
        TIMINGS[step] = time.monotonic() - started
        return result

    def compose(self, *args: str, **environment: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(compose.binary()), "--env-file", str(self.env_file), *args],
            cwd=ROOT,
            env={**self.environment, **environment},
            capture_output=True,
            text=True,
            timeout=120,
        )

    def services(self) -> dict[str, dict]:
        """Service → its container's `ps` record (Service, State, Health, ExitCode, Publishers)."""
        result = self.compose("ps", "--all", "--format", "json")
        assert result.returncode == 0, result.stderr
        records = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
        return {record["Service"]: record for record in records}

    def env_value(self, key: str) -> str:
        for line in self.env_file.read_text().splitlines():
            if line.startswith(f"{key}="):
                return line.split("=", 1)[1]
        raise KeyError(key)


@pytest.fixture(scope="session")
def engine() -> Iterator[engines.Engine]:
    try:
        found = engines.find_or_start()
    except engines.EngineUnavailable as exc:
        pytest.fail(f"the compose test needs a Docker engine: {exc}", pytrace=False)
    yield found
    found.stop()


@pytest.fixture(scope="session")
def compose_run(engine: engines.Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeRun]:
    project = f"twinpipe-test-{secrets.token_hex(3)}"
    # An image tag of the run's own: a user's (or another run's) twinpipe:0.1.0 is never replaced.
    environment = {
        **engine.env,
        "COMPOSE_PROJECT_NAME": project,
        "TWINPIPE_IMAGE": f"twinpipe-test:{project}",
    }
    if UPSTREAM:
        environment["COMPOSE_FILE"] = "docker-compose.yml"
    else:
        builder = Builder(engine)
        builder.all()
        TIMINGS.update(builder.timings)
        environment["COMPOSE_FILE"] = f"docker-compose.yml:{OVERRIDE}"
        environment["PYTHON_IMAGE"] = PYTHON
    # A hand-written .env as a user might copy it: ports of the test's own, keys and secrets missing.
    ports = {
        key: free_port()
        for key in ("MQTT_PORT", "INFLUXDB_PORT", "PROMETHEUS_PORT", "GRAFANA_PORT", "SENSORTHINGS_PORT")
    }
    env_file = tmp_path_factory.mktemp("compose") / ".env"
    env_file.write_text("MQTT_PASSWORD=\n" + "".join(f"{key}={port}\n" for key, port in ports.items()))
    run = ComposeRun(engine, environment["COMPOSE_PROJECT_NAME"], env_file, ports, environment)
    yield run
    # Whatever the tests left: the project's containers, network, volumes and image.
    run.compose("--profile", "tools", "down", "--volumes", "--remove-orphans")
    engine.docker("image", "rm", "--force", environment["TWINPIPE_IMAGE"], check=False)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMINGS:
        terminalreporter.section("compose test timings")
        for step, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{step:>24}: {seconds:6.1f} s")
