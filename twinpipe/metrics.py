"""Prometheus helpers shared by the stages.

Each stage declares its metrics once, in its own `metrics.py`, named twinpipe_<stage>_<what>_<unit>
(prometheus-client adds `_total` to counters). They live in the process-wide registry that
`/metrics` serves; a stage is one process.
"""

from __future__ import annotations

from collections.abc import Mapping

from kafka import KafkaConsumer, TopicPartition
from prometheus_client import REGISTRY


def sample(name: str, **labels: str) -> float:
    """The current value of one sample (0 when it has not been set), for summaries and tests."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def consumer_lag(consumer: KafkaConsumer, offsets: Mapping[TopicPartition, int]) -> int | None:
    """Records behind: the fetch high watermark minus `offsets` (committed or position), summed over
    the partitions where both are known. None until a fetch has reported a high watermark."""
    lags = [
        highwater - offset
        for tp, offset in offsets.items()
        if (highwater := consumer.highwater(tp)) is not None
    ]
    return sum(max(0, lag) for lag in lags) if lags else None
