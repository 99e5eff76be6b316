"""Statistics of the reports: mean ± sample std over seeds, and paired differences with t-intervals.

Every table of ``igb compare``, ``igb quickstart`` and ``igb evaluate`` uses these two functions;
seeds are paired across methods (same data, initialisation and batch order), so differences are
taken seed by seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof = 1``; NaN std for fewer than two values)."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return math.nan, math.nan
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else math.nan


@dataclass(frozen=True)
class Paired:
    """Paired differences (method minus baseline, seed by seed).

    Attributes:
        mean: Mean difference.
        std: Sample standard deviation (NaN for one pair).
        low: Lower bound of the two-sided t-interval (NaN for fewer than two pairs).
        high: Upper bound of the interval.
        wins: Pairs where the difference is below 0 (the method is better when lower is better).
        n: Number of pairs.
    """

    mean: float
    std: float
    low: float
    high: float
    wins: int
    n: int


def paired(diffs: Sequence[float], level: float = 0.95) -> Paired:
    """Mean, std, wins and the ``level`` Student-t interval (n − 1 dof) of paired differences."""
    a = np.asarray(diffs, dtype=np.float64)
    if a.size == 0:
        return Paired(math.nan, math.nan, math.nan, math.nan, 0, 0)
    mean, std = mean_std(a.tolist())
    low = high = math.nan
    if a.size > 1:
        half = float(stats.t.ppf(0.5 + level / 2.0, a.size - 1) * std / math.sqrt(a.size))
        low, high = mean - half, mean + half
    return Paired(mean, std, low, high, int((a < 0).sum()), int(a.size))


__all__ = ["Paired", "mean_std", "paired"]
