"""Fault tests get servers of their own: they stop and cut them, which must not disturb other tests.
Clients reach Kafka through a proxy that can cut the network (the test broker keeps its data in
memory, so it is never restarted)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.stack import LocalStack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(tmp_path_factory.mktemp("fault-stack"), kafka_proxy=True) as local:
        yield local
