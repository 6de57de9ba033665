"""The samplers a study can use: Sobol quasi-random points (the default, as AlgoPerf) or Optuna's TPE.

Optuna's own ``QMCSampler`` fixes its search space at the study's first trial and counts its points in a shared
counter; ours samples the space it is given — so a widened space takes effect at once — and gives trial ``n``
point ``n`` of one scrambled Sobol sequence, so any number of workers share the sequence with nothing to race on.
"""
from __future__ import annotations

import math
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution

SAMPLERS = ("qmc", "tpe")


class SobolSampler(optuna.samplers.BaseSampler):
    """Point ``trial.number`` of a scrambled Sobol sequence (seeded), mapped into ``space``."""

    def __init__(self, space: dict[str, BaseDistribution], seed: int) -> None:
        self.space, self.seed = dict(space), seed

    def infer_relative_search_space(self, study: optuna.Study, trial: optuna.trial.FrozenTrial
                                    ) -> dict[str, BaseDistribution]:
        return dict(self.space)

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        from scipy.stats import qmc  # here, not at the top: scipy.stats costs ~1.5 s of every tune command's start

        engine = qmc.Sobol(len(search_space), scramble=True, seed=self.seed)
        if trial.number:  # scipy refuses to skip zero points
            engine.fast_forward(trial.number)
        point = engine.random(1)[0]
        return {name: from_unit(dist, float(u)) for (name, dist), u in zip(search_space.items(), point)}

    def sample_independent(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        raise RuntimeError(f"{param_name} is outside the search space this sampler was given")


def from_unit(dist: BaseDistribution, u: float) -> Any:
    """A point of the unit interval mapped into ``dist``: uniform on its (log) scale, or one of its choices."""
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[min(int(u * len(dist.choices)), len(dist.choices) - 1)]
    assert isinstance(dist, FloatDistribution)
    if dist.log:
        value = math.exp(math.log(dist.low) + u * (math.log(dist.high) - math.log(dist.low)))
    else:
        value = dist.low + u * (dist.high - dist.low)
    return min(max(value, dist.low), dist.high)


def make_sampler(name: str, space: dict[str, BaseDistribution], seed: int, trials_so_far: int,
                 budget: int) -> optuna.samplers.BaseSampler:
    """``qmc``: :class:`SobolSampler`. ``tpe``: Optuna's TPE, random for the first half of the budget, seeded by the
    trial it is about to sample, so two workers with the same history never propose the same point."""
    if name == "qmc":
        return SobolSampler(space, seed)
    return optuna.samplers.TPESampler(seed=(seed * 1_000_003 + trials_so_far) % 2**32,
                                      n_startup_trials=math.ceil(budget / 2))
