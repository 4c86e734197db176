"""A Docker engine for tests/compose: the one already running, else a private dockerd for the run.

On a developer's machine the engine that runs (DOCKER_HOST or the default socket) is used as it is
and left running; nothing of its configuration is touched. On a CI machine with none (Debian's
docker.io installed by `make test`, no daemon), a dockerd of its own is started, as root, with its
own socket, state and config (default-ulimits nofile 20000 / nproc 32768, which the stages' clients
need), and stopped after the run. Its data root is kept, so base images are cached between runs.
A private dockerd found already answering on that socket (another run's, live or killed) is used
and left running: only the run that started an engine stops it. Each run's checks count only what
its own compose project made, so runs sharing an engine do not see each other's leftovers.
Where neither works, `EngineUnavailable` says why: the compose test fails, it never skips.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

PRIVATE_ROOT = Path("/var/lib/twinpipe-compose-test")  # image cache between runs
PRIVATE_RUN = Path("/run/twinpipe-compose-test")
DAEMON_CONFIG = {
    "default-ulimits": {
        "nofile": {"Name": "nofile", "Soft": 20000, "Hard": 20000},
        "nproc": {"Name": "nproc", "Soft": 32768, "Hard": 32768},
    }
}


class EngineUnavailable(RuntimeError):
    pass


class Engine:
    """`env` is the environment for docker and compose commands (DOCKER_HOST set when private);
    `pid` the dockerd this run started, else None (an engine found running is never stopped)."""

    def __init__(self, env: dict[str, str], pid: int | None = None) -> None:
        self.env = env
        self.pid = pid

    @property
    def private(self) -> bool:
        return self.pid is not None

    def docker(self, *args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True, **kwargs)
        if check and result.returncode != 0:
            raise RuntimeError(
                f"docker {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}"
            )
        return result

    def version(self) -> str:
        return self.docker("version", "--format", "{{.Server.Version}}").stdout.strip()

    def stop(self, timeout_s: float = 60) -> None:
        """Stop the private dockerd (SIGTERM, then SIGKILL after `timeout_s`); a shared one is left alone."""
        if self.pid is None:
            return
        os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while alive(self.pid):
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
            time.sleep(0.2)
        self.pid = None


def alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaps it when it is our child
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def answers(env: dict[str, str]) -> bool:
    try:
        result = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and bool(result.stdout.strip())


def find_or_start() -> Engine:
    if shutil.which("docker") is None:
        raise EngineUnavailable("no docker CLI: install Docker (make test installs Debian's docker.io)")
    env = dict(os.environ)
    if answers(env):
        return Engine(env)
    dockerd = shutil.which("dockerd")
    if dockerd is None or os.geteuid() != 0:
        raise EngineUnavailable(
            "no Docker engine answers (DOCKER_HOST or the default socket), and none can be started here "
            f"({'not root' if dockerd else 'no dockerd'}): start Docker, or run make test as root on Debian"
        )
    env["DOCKER_HOST"] = f"unix://{PRIVATE_RUN / 'docker.sock'}"
    pidfile = PRIVATE_RUN / "docker.pid"
    if answers(env):  # another run's (live, or killed and left running): use it, leave it running
        return Engine(env)
    PRIVATE_RUN.mkdir(parents=True, exist_ok=True)
    (PRIVATE_ROOT / "docker").mkdir(parents=True, exist_ok=True)
    config = PRIVATE_RUN / "daemon.json"
    config.write_text(json.dumps(DAEMON_CONFIG))
    log = open(PRIVATE_ROOT / "dockerd.log", "ab")  # noqa: SIM115 - owned by the daemon
    process = subprocess.Popen(
        [
            dockerd,
            "--config-file",
            str(config),
            "--data-root",
            str(PRIVATE_ROOT / "docker"),
            "--exec-root",
            str(PRIVATE_RUN / "exec"),
            "--pidfile",
            str(pidfile),
            "--host",
            env["DOCKER_HOST"],
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    deadline = time.monotonic() + 60
    while not answers(env):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            tail = (PRIVATE_ROOT / "dockerd.log").read_text(errors="replace")[-2000:]
            raise EngineUnavailable(f"dockerd did not start (exit {process.poll()}):\n{tail}")
        time.sleep(0.2)
    return Engine(env, process.pid)
