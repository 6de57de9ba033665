"""Paired comparisons over seeds: a 95% interval for a mean and the verdict it supports.

A comparison of two methods is paired by seed (same data order and initialisation on both sides), so its
uncertainty is that of the mean of the per-seed differences ``d_i``. Two intervals:

* ``t`` (the default): ``mean ± t_{n-1, 0.975} · sd / √n`` — exact when the differences are normal, and the
  right choice for the 2–10 seeds optimizer studies have;
* ``bootstrap``: the percentile interval of the mean over resamples of the pairs (fixed RNG seed, so a report is
  reproducible) — no normality assumption, but too narrow with few seeds (about 75% coverage at n = 3, 85% at
  n = 5, 93% at n = 20 for normal differences; tests/report/test_stats.py measures it). With strongly skewed
  differences both fall short at small n (t: ~83% at n = 5 for log-normal ones): more seeds is the only cure.

A verdict is "better" or "worse" when the interval excludes the null value (0 for differences, 0 for log
speedups), "indistinguishable" otherwise. One seed gives no interval and no verdict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import stdtrit  # the Student-t quantile (scipy.stats costs a second to import)

LEVEL = 0.95
METHODS = ("t", "bootstrap")
BOOTSTRAP_RESAMPLES = 10_000
BETTER, WORSE, INDISTINGUISHABLE, NO_VERDICT = "better", "worse", "indistinguishable", "–"


@dataclass(frozen=True)
class Interval:
    """The mean of ``n`` values and a ``level`` interval around it (NaN bounds when n < 2)."""

    mean: float
    low: float
    high: float
    n: int
    method: str

    @property
    def defined(self) -> bool:
        return self.n >= 2 and not math.isnan(self.low)

    def map(self, function) -> Interval:
        """The interval of ``function(mean)`` for a monotone increasing ``function`` (e.g. exp of a log ratio)."""
        return Interval(function(self.mean), function(self.low), function(self.high), self.n, self.method)


def t_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Student-t interval of the mean of ``values``."""
    x = _finite(values)
    n = len(x)
    if n < 2:
        return Interval(float(x.mean()) if n else math.nan, math.nan, math.nan, n, "t")
    mean = float(x.mean())
    half = float(stdtrit(n - 1, 0.5 + level / 2)) * float(x.std(ddof=1)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, "t")


def bootstrap_interval(values: Sequence[float], level: float = LEVEL, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = 0) -> Interval:
    """Percentile-bootstrap interval of the mean of ``values`` (``resamples`` draws, RNG seeded with ``seed``)."""
    x = _finite(values)
    n = len(x)
    if n < 2:
        return Interval(float(x.mean()) if n else math.nan, math.nan, math.nan, n, "bootstrap")
    draws = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    means = x[draws].mean(axis=1)
    low, high = np.quantile(means, [0.5 - level / 2, 0.5 + level / 2])
    return Interval(float(x.mean()), float(low), float(high), n, "bootstrap")


def interval(values: Sequence[float], method: str = "t", level: float = LEVEL) -> Interval:
    """The ``method`` ("t" or "bootstrap") interval of the mean of ``values``."""
    if method == "t":
        return t_interval(values, level)
    if method == "bootstrap":
        return bootstrap_interval(values, level)
    raise ValueError(f"interval method must be one of {METHODS}, got {method!r}")


def verdict(estimate: Interval, higher_is_better: bool, null: float = 0.0) -> str:
    """"better" / "worse" when the interval lies wholly on one side of ``null``, else "indistinguishable"."""
    if not estimate.defined:
        return NO_VERDICT
    if estimate.low > null:
        return BETTER if higher_is_better else WORSE
    if estimate.high < null:
        return WORSE if higher_is_better else BETTER
    return INDISTINGUISHABLE


def _finite(values: Sequence[float]) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    if not np.isfinite(x).all():
        raise ValueError(f"an interval needs finite values, got {x.tolist()}")
    return x
