"""The product's shape: stages are independent, each runs as `python -m <stage>` with a useful --help."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = [
    "publisher",
    "mqtt_kafka_bridge",
    "consumer_display",
    "influx_ingestion",
    "latency_probe",
    "sensorthings_api",
    "twin_state",
    "alerting",
    "predictive_analysis",
]


def imported_packages(package: str) -> set[str]:
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("stage", STAGES)
def test_no_stage_imports_another_stage_or_dev_tooling(stage: str) -> None:
    forbidden = (set(STAGES) - {stage}) | {"devstack", "tests"}
    assert not imported_packages(stage) & forbidden


def test_core_imports_no_stage() -> None:
    assert not imported_packages("twinpipe") & (set(STAGES) | {"devstack", "tests"})


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_folder_has_its_readme_and_entry_point(stage: str) -> None:
    readme = (ROOT / stage / "README.md").read_text()
    assert f"python -m {stage}" in readme
    assert (ROOT / stage / "__main__.py").is_file()


@pytest.mark.parametrize("module", [*STAGES, "publisher.simulate", "twinpipe"])
def test_help_explains_the_configuration(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert "TWINPIPE__" in result.stdout  # how to override any key from the environment
    assert ("check-config" if module == "twinpipe" else "--config PATH") in result.stdout


def test_each_config_section_is_defined_in_its_own_module() -> None:
    """`twinpipe/config/<section>.py` holds the keys of `<section>:` (logging's module is logs.py)."""
    from twinpipe.config import Config

    for section, field in Config.model_fields.items():
        module = field.annotation.__module__.rsplit(".", 1)[-1]
        assert module == {"logging": "logs"}.get(section, section), (section, field.annotation.__module__)
