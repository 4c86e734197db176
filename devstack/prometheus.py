"""Prometheus for tests: Debian's prometheus with the repository's prometheus.yml and alert rules,
its scrape targets pointed at the stages' local metrics ports."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from devstack.process import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[1]


class Prometheus(ServerProcess):
    name = "prometheus"

    def __init__(self, workdir: Path, targets: dict[str, str], scrape_interval_s: int = 1) -> None:
        """`targets`: job name (as in prometheus/prometheus.yml) → host:port to scrape instead."""
        super().__init__(workdir)
        self.port = free_port()
        self.targets = targets
        self.scrape_interval_s = scrape_interval_s

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
        interval = f"{self.scrape_interval_s}s"
        config["global"] = {"scrape_interval": interval, "evaluation_interval": interval}
        config["rule_files"] = [str(ROOT / "prometheus" / name) for name in config["rule_files"]]
        jobs = [job for job in config["scrape_configs"] if job["job_name"] in self.targets]
        for job in jobs:
            job["static_configs"] = [{"targets": [self.targets[job["job_name"]]]}]
        config["scrape_configs"] = jobs
        path = self.workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        return [
            shutil.which("prometheus") or "/usr/bin/prometheus",
            f"--config.file={path}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]

    def ready(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
            return response.status == 200

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query; raises on a PromQL error. Returns the result vector."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"PromQL error for {promql!r}: {exc.read().decode()}") from None
        return body["data"]["result"]
