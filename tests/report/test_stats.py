"""Intervals and verdicts against known distributions: coverage measured on simulated seed-paired comparisons."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from research_optim.report.stats import Interval, bootstrap_interval, interval, t_interval, verdict


def simulated_pairs(rng: np.random.Generator, n: int, effect: float) -> np.ndarray:
    """Per-seed differences method − baseline of a paired comparison.

    Each seed moves both runs by a large shared amount (its initialisation and data order); the method adds
    ``effect`` and its own noise. Pairing cancels the shared part, so the differences are N(effect, 0.5² + 0.3²).
    """
    seed_effect = rng.normal(0.0, 1.0, n)
    baseline = 1.0 + seed_effect + rng.normal(0.0, 0.3, n)
    method = 1.0 + seed_effect + effect + rng.normal(0.0, 0.5, n)
    return method - baseline


def coverage(make_interval, n: int, simulations: int, seed: int, effect: float = 0.2) -> float:
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(simulations):
        estimate = make_interval(simulated_pairs(rng, n, effect))
        hits += estimate.low <= effect <= estimate.high
    return hits / simulations


@pytest.mark.parametrize("n", [3, 5, 10])
def test_t_interval_covers_the_true_difference_95_percent_of_the_time(n):
    # 4000 simulations: the standard error of a 95% coverage estimate is 0.0034, so ±0.015 is > 4 SE.
    assert coverage(t_interval, n, simulations=4000, seed=n) == pytest.approx(0.95, abs=0.015)


@pytest.mark.slow  # thousands of simulated bootstraps
def test_bootstrap_interval_covers_with_many_seeds_and_undercovers_with_few():
    def boot(values):
        return bootstrap_interval(values, resamples=1000)

    assert coverage(boot, 20, simulations=1500, seed=1) == pytest.approx(0.93, abs=0.025)
    # Why t is the default: with 3 seeds the percentile bootstrap misses the truth about one time in four.
    assert coverage(boot, 3, simulations=1500, seed=2) < 0.8


def test_t_interval_by_hand():
    values = [1.0, 2.0, 4.0]
    mean, sd = 7 / 3, math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    half = 4.302652729911275 * sd / math.sqrt(3)  # t_{2, 0.975}
    estimate = t_interval(values)
    assert (estimate.mean, estimate.low, estimate.high, estimate.n) == pytest.approx((mean, mean - half,
                                                                                       mean + half, 3))
    assert scipy_stats.t.ppf(0.975, 2) == pytest.approx(4.302652729911275)


def test_one_value_has_no_interval_and_no_verdict():
    estimate = t_interval([0.5])
    assert estimate.mean == 0.5 and math.isnan(estimate.low) and not estimate.defined
    assert verdict(estimate, higher_is_better=False) == "–"
    assert not bootstrap_interval([0.5]).defined


def test_identical_differences_give_a_point_interval():
    estimate = t_interval([0.0, 0.0, 0.0])
    assert (estimate.low, estimate.high) == (0.0, 0.0)
    assert verdict(estimate, higher_is_better=False) == "indistinguishable"
    assert verdict(t_interval([-1.0, -1.0]), higher_is_better=False) == "better"


def test_verdict_rates_under_the_null_and_under_a_large_effect():
    rng = np.random.default_rng(7)
    null = [verdict(t_interval(simulated_pairs(rng, 5, 0.0)), higher_is_better=False) for _ in range(2000)]
    # Under no difference, "indistinguishable" 95% of the time, the two false verdicts split the rest.
    assert null.count("indistinguishable") / 2000 == pytest.approx(0.95, abs=0.015)
    assert null.count("better") / 2000 == pytest.approx(0.025, abs=0.012)
    large = [verdict(t_interval(simulated_pairs(rng, 5, -3.0)), higher_is_better=False) for _ in range(500)]
    assert large.count("better") == 500  # lower loss by 3 σ: every comparison says better


def test_verdict_follows_the_metric_direction():
    above = Interval(0.5, 0.1, 0.9, 3, "t")
    assert verdict(above, higher_is_better=True) == "better"  # accuracy up
    assert verdict(above, higher_is_better=False) == "worse"  # loss up
    assert verdict(Interval(1.5, 1.1, 2.0, 3, "t"), higher_is_better=True, null=1.0) == "better"  # a speedup


def test_interval_rejects_unknown_methods_and_non_finite_values():
    assert interval([1.0, 2.0], "bootstrap").method == "bootstrap"
    with pytest.raises(ValueError, match="'bca'"):
        interval([1.0, 2.0], "bca")
    with pytest.raises(ValueError, match="finite"):
        t_interval([1.0, math.inf])


def test_map_transforms_a_log_interval():
    speedup = t_interval([math.log(2.0), math.log(2.0), math.log(2.0)]).map(math.exp)
    assert (speedup.mean, speedup.low, speedup.high) == pytest.approx((2.0, 2.0, 2.0))
