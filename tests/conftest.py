"""Fixtures: real servers for the whole session (Mosquitto, Tansu, influxd behind the v2 shim) and,
per test, fresh topic/bucket/group names so tests never see each other's data."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from devstack.stack import LocalStack
from tests.harness import Pipeline

# Speed is measured in bench/, not in tests: on a loaded CI machine one example of a property test
# took 385 ms against hypothesis's default 200 ms deadline (and passed in 12 ms when re-run).
settings.register_profile("twinpipe", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("twinpipe")


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(tmp_path_factory.mktemp("stack")) as local:
        yield local


@pytest.fixture
def pipeline(stack: LocalStack, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Pipeline]:
    run = Pipeline(stack, tmp_path, uuid.uuid4().hex[:8])
    yield run
    run.stop_all()
    report: Any = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(run.logs())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
