"""Seasonal-trend decomposition of one series' window: statsmodels' STL (Cleveland et al. 1990,
"STL: A Seasonal-Trend Decomposition Procedure Based on Loess"), robust to outliers. Pure."""

from __future__ import annotations

import numpy as np
from statsmodels.tsa.seasonal import STL


def fill_gaps(steps: list[tuple[int, float]]) -> tuple[list[int], list[float]]:
    """(step, mean) with gaps → every step from the first to the last, a missing one linearly
    interpolated (STL needs a regular series)."""
    if not steps:
        return [], []
    first, last = steps[0][0], steps[-1][0]
    index = np.arange(first, last + 1)
    known = np.array([s for s, _ in steps])
    values = np.interp(index, known, np.array([v for _, v in steps]))
    return index.tolist(), values.tolist()


def decompose(values: list[float], period: int) -> tuple[list[float], list[float], list[float]] | None:
    """(trend, seasonal, resid), each as long as `values`; None when fewer than two periods."""
    if period < 2 or len(values) < 2 * period:
        return None
    result = STL(np.asarray(values, dtype=float), period=period, robust=True).fit()
    return result.trend.tolist(), result.seasonal.tolist(), result.resid.tolist()
