"""prometheus/: the config and alert rules pass promtool, every rule has a unit test that passes, and
every long-running stage of the compose file is scraped."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = ROOT / "prometheus"
LONG_RUNNING_STAGES = {
    "publisher",
    "mqtt_kafka_bridge",
    "influx_ingestion",
    "predictive_analysis",
    "latency_probe",
    "sensorthings_api",
    "alerting",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, cwd=PROMETHEUS)


def test_config_and_rules_pass_promtool_checks() -> None:
    for args in (("check", "config", "prometheus.yml"), ("check", "rules", "alerts.yml")):
        result = promtool(*args)
        assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_rule_has_a_passing_unit_test() -> None:
    result = promtool("test", "rules", "tests/alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tests = yaml.safe_load((PROMETHEUS / "tests" / "alerts_test.yml").read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert alerts == tested, "each alert has a case where it fires"


def test_every_stage_is_scraped_on_its_compose_name_and_health_port() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: target
        for job in config["scrape_configs"]
        for target in job["static_configs"][0]["targets"]
    }
    for stage in LONG_RUNNING_STAGES:
        assert targets[stage] == f"{stage}:8080"
