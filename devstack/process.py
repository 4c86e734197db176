"""Starting a server process, waiting for it to be ready, and stopping it."""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on and this process has not handed out before.

    Chosen below the kernel's ephemeral range: a port the OS hands out for `bind(0)` lies in that
    range, from which every outgoing connection also takes its local port; between this check and
    the server's own bind, one of the many Kafka/MQTT client connections of a test run can take it
    (seen: a stage failing with EADDRINUSE on its health port). Below that range only listeners
    compete. A test picks several ports before it starts anything, so a port is handed out once
    per process: two random picks from the same range do coincide over a whole suite (seen in CI:
    two stages of one test given the same health port). Under pytest-xdist each worker picks from
    its own slice of the range.
    """
    high = _ephemeral_low()
    low = max(high - 12000, 1024)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # pytest -n: gw0, gw1, ...: a slice each
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if worker.startswith("gw") and workers > 1:
        width = (high - low) // workers
        low += int(worker[2:]) * width
        high = low + width
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(low, high)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free loopback port in {low}..{high - 1} after 200 tries")


def poll(
    read: Callable[[], T], done: Callable[[T], bool], timeout_s: float, what: str, interval_s: float = 0.1
) -> T:
    """Call `read` until `done(result)`; at the deadline, TimeoutError naming `what` and the last result."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = read()
        if done(result):
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}; last: {result!r:.500}")
        time.sleep(interval_s)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def http_get(url: str) -> tuple[int, str]:
    """Status and body of a GET; status 0 when nothing answers (a stage starting or stopped)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def stage_ready(port: int) -> bool:
    """Whether the twinpipe stage serving health on `port` answers /readyz with 200."""
    return http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200


class ServerProcess:
    """One server process whose output goes to a log file in its work dir."""

    name = "server"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{self.name}.log"
        self._process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout_s: float = 20.0) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        self._process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True
        )
        log.close()
        try:
            poll(self._ready_unless_exited, bool, timeout_s, f"{self.name} to be ready", interval_s=0.05)
        except (TimeoutError, RuntimeError) as exc:
            self.stop()
            raise RuntimeError(f"{exc}; log {self.log_path}:\n{self.log_tail()}") from None

    def _ready_unless_exited(self) -> bool:
        if self._process is None or self._process.poll() is not None:
            raise RuntimeError(f"{self.name} exited")
        try:
            return self.ready()
        except Exception:  # noqa: BLE001 - a server that is not up yet fails in many ways
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            os.killpg(self._process.pid, sig)
            try:
                self._process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()
        self._process = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a /metrics page (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = "^" + re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if wanted else "") + r" (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def stage_metric(port: int, name: str, **labels: str) -> float:
    """One sample from the /metrics of the stage on `port`; 0 while it is not serving."""
    return metric_value(http_get(f"http://127.0.0.1:{port}/metrics")[1], name, **labels)
