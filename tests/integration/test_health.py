"""/healthz on a running stage, and the `python -m twinpipe healthcheck` probe compose uses."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

from devstack.process import free_port
from tests.harness import Pipeline, poll


def test_stage_serves_healthz_and_the_probe_reads_its_port_from_config(pipeline: Pipeline) -> None:
    port = free_port()
    publisher = pipeline.stage("publisher", {"health": {"port": port}})

    def status() -> dict:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                return json.load(response)
        except OSError:
            return {}

    assert poll(status, lambda body: body.get("status") == "pass", 20, "healthz pass") == {
        "status": "pass",
        "failing": [],
    }
    config = pipeline.write_config({"health": {"port": port}}, name="probe.yaml")
    probe = [sys.executable, "-m", "twinpipe", "healthcheck", "--config", str(config)]
    assert subprocess.run(probe, capture_output=True).returncode == 0
    assert publisher.stop() == 0
    assert subprocess.run(probe, capture_output=True).returncode == 1
