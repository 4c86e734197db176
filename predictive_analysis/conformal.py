"""Split-conformal prediction intervals from a bounded window of recent absolute errors.

Source: A. N. Angelopoulos and S. Bates, "A Gentle Introduction to Conformal Prediction and
Distribution-Free Uncertainty Quantification" (2021, arXiv:2107.07511), §1: with n calibration scores
s_i = |y_i − ŷ_i|, the interval ŷ ± q̂ where q̂ is the ⌈(n+1)(1−α)⌉/n empirical quantile of the scores
(the ⌈(n+1)(1−α)⌉-th smallest) covers a new exchangeable point with probability ≥ 1−α. When
⌈(n+1)(1−α)⌉ > n the quantile is infinite: no finite interval is claimed yet.

Time series are not exchangeable; a sliding window of the most recent errors (per series and
horizon) is the usual adaptation (e.g. Barber et al. 2023, "Conformal prediction beyond
exchangeability"), and the observed coverage is measured so a failing interval is seen, not assumed.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Sequence


def conformal_rank(n: int, coverage: float) -> int:
    """⌈(n+1)·coverage⌉: the rank (1-based) of the score that is q̂; > n means no finite q̂."""
    # round() guards against 0.9 * 10 = 9.000000000000002 in binary floating point
    return math.ceil(round((n + 1) * coverage, 9))


def conformal_quantile(scores: Sequence[float], coverage: float) -> float | None:
    """q̂ of `scores` (non-negative) at nominal `coverage` (1−α, 0 < coverage < 1); None when the
    window is too small for a finite quantile (n < coverage/(1−coverage), e.g. n < 9 at 0.9)."""
    rank = conformal_rank(len(scores), coverage)
    if rank > len(scores):
        return None
    return sorted(scores)[rank - 1]


class ErrorWindow:
    """The last `size` absolute errors of one forecaster at one horizon, with O(1) MAE, RMSE and
    conformal quantile (a sorted copy is kept beside the arrival order)."""

    __slots__ = ("_errors", "_sorted", "_sum", "_squares")

    def __init__(self, size: int) -> None:
        self._errors: deque[float] = deque(maxlen=size)
        self._sorted: list[float] = []
        self._sum = 0.0
        self._squares = 0.0

    def add(self, error: float) -> None:
        """`error`: actual − forecast, in the series' unit."""
        error = abs(error)
        if len(self._errors) == self._errors.maxlen:
            old = self._errors[0]
            self._sum -= old
            self._squares -= old * old
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        bisect.insort(self._sorted, error)
        self._errors.append(error)
        self._sum += error
        self._squares += error * error

    def __len__(self) -> int:
        return len(self._errors)

    def mae(self) -> float | None:
        return max(0.0, self._sum) / len(self._errors) if self._errors else None

    def rmse(self) -> float | None:
        return math.sqrt(max(0.0, self._squares) / len(self._errors)) if self._errors else None

    def quantile(self, coverage: float) -> float | None:
        """conformal_quantile(self.errors(), coverage), without sorting."""
        rank = conformal_rank(len(self._sorted), coverage)
        return self._sorted[rank - 1] if rank <= len(self._sorted) else None

    def errors(self) -> list[float]:
        return list(self._errors)


class Coverage:
    """How many intervals held their actual, of how many were judged (one horizon)."""

    __slots__ = ("covered", "total")

    def __init__(self) -> None:
        self.covered = 0
        self.total = 0

    def judge(self, actual: float, lower: float, upper: float) -> bool:
        held = lower <= actual <= upper
        self.total += 1
        self.covered += held
        return held

    def observed(self) -> float | None:
        return self.covered / self.total if self.total else None
