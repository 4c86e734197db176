"""Running twinpipe stages as the separate processes they are in production."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


class StageProcess:
    """`python -m <module> --config <path> ...` with its output in a log file."""

    def __init__(
        self, module: str, config_path: Path, log_dir: Path, *args: str, env: dict[str, str] | None = None
    ):
        self.module = module
        self.argv = [sys.executable, "-m", module, "--config", str(config_path), *args]
        self.env = {**os.environ, **(env or {})}
        self.log_path = log_dir / f"{module.replace('.', '_')}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> StageProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        return self

    def stop(self, timeout_s: float = 20.0) -> int:
        """SIGTERM and wait; SIGKILL if it does not exit in time. Returns the exit status."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""
