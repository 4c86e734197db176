"""Reading a series back from InfluxDB: the steps before its first reading (warm-up) and a window
for the seasonal decomposition. Queries are InfluxQL (portable across InfluxDB 1.x/2.x/3.x), each
bucketed by `GROUP BY time(<step>s)`, the same steps as resample.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twinpipe.names import DEVICE_TAG

Rows = Callable[[str], list[dict[str, Any]]]


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def step_means_query(
    measurement: str, device: str, value: str, step_s: float, start_ns: int, end_ns: int
) -> str:
    """Mean of `value` per step over [start_ns, end_ns), steps without readings left out."""
    return (
        f'SELECT mean("{value}") AS "mean" FROM "{measurement}" WHERE "{DEVICE_TAG}" = \'{_quote(device)}\''
        f" AND time >= {start_ns} AND time < {end_ns} GROUP BY time({int(step_s)}s) fill(none)"
    )


def step_means(rows: Rows, query: str, step_ns: int) -> list[tuple[int, float]]:
    """(step index, mean) in time order. Raises twinpipe.influx.Unavailable."""
    return [
        (row["time"] // step_ns, float(row["mean"])) for row in rows(query) if row.get("mean") is not None
    ]
