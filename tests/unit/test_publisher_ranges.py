"""Readings outside their datastream's plausible range (model:) are dropped before they are
sequenced, counted per datastream and logged, for every source; values without a range pass."""

from __future__ import annotations

import logging
import time

import pytest

from publisher.app import Publisher
from twinpipe.config.loading import parse_config
from twinpipe.metrics import sample


def test_an_out_of_range_simulated_reading_is_dropped_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Publisher is built but never connected (no broker needed): accept() is the source side."""
    publisher = Publisher(parse_config({"publisher": {"source": "simulator"}}, {}))
    before = sample("twinpipe_publisher_out_of_range_total", datastream="humidity")
    now = time.time_ns()
    with caplog.at_level(logging.WARNING, logger="publisher"):
        publisher.accept("sim-1", {"temperature": 21.0, "humidity": 100.5}, now)  # RH above 100 %
        publisher.accept("sim-1", {"temperature": 21.0, "humidity": 0.0}, now)  # a real 0.00 is kept
        publisher.accept("sim-1", {"co2": 99999.0}, now)  # no observed property, no range: kept
        publisher.accept("elsewhere-1", {"humidity": 100.5}, now)  # no thing: not modelled, kept
    assert sample("twinpipe_publisher_out_of_range_total", datastream="humidity") == before + 1
    queued = [publisher.buffer.get(timeout=0) for _ in range(len(publisher.buffer))]
    kept = [(p.envelope.device, p.envelope.seq, p.envelope.values) for p in queued if p]
    assert kept == [
        ("sim-1", 0, {"temperature": 21.0, "humidity": 0.0}),
        ("sim-1", 1, {"co2": 99999.0}),
        ("elsewhere-1", 0, {"humidity": 100.5}),
    ], "the dropped reading took no sequence number, so no gap is reported downstream"
    assert any(
        "humidity = 100.5 is outside its plausible range [0.0, 100.0]" in r.getMessage()
        for r in caplog.records
    )
