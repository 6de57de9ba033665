"""Schedule-Free RAdam (``schedulefree.RAdamScheduleFree``, 1.4.1): Schedule-Free AdamW without a warmup.

RAdam's rectification (Liu et al. 2020, arXiv 1908.03265) replaces the warmup: with ρ∞ = 2/(1 − β2) − 1 and
ρ_t = ρ∞ − 2t·β2^t/(1 − β2^t), while ρ_t ≤ 4 the variance estimate is too young and the step is plain SGD at
lr_t = lr·[not silent_sgd_phase] (0 by default: no step at all, and no weight in the average); afterwards the
Adam direction of Schedule-Free AdamW at lr_t = lr·√((ρ_t − 4)(ρ_t − 2)ρ∞ / ((ρ∞ − 4)(ρ∞ − 2)ρ_t)). Everything else
— z, the averaging weights, y in the parameters, ``train()``/``eval()`` — is Schedule-Free AdamW's. Verified against
``schedulefree.RAdamScheduleFree`` and ``RAdamScheduleFreeClosure`` (1.4.1).
"""
from __future__ import annotations

from typing import Any

from torch import Tensor

from research_optim.optim import checks
from research_optim.optim.schedule_free import ScheduleFreeAdamRule, _FastScheduleFree
from research_optim.optim.schedule_free_closure import ClosureForm
from research_optim.optim.schedule_free_core import check_beta

__all__ = ["RAdamScheduleFree", "RAdamScheduleFreeClosure", "rectification"]


def rectification(beta2: float, t: int, silent_sgd_phase: bool) -> tuple[float, bool]:
    """(the factor on lr at step t, whether the step is adaptive) — the package's arithmetic."""
    beta2_t = beta2**t
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * t * beta2_t / (1 - beta2_t)
    if rho_t > 4.0:
        return ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5, True
    return float(not silent_sgd_phase), False


class RAdamScheduleFreeRule(ScheduleFreeAdamRule):
    """Schedule-Free AdamW's direction once ρ_t > 4, the gradient before (v is updated on every step)."""

    paths = ("reference", "foreach")

    def scalars(self, group: dict[str, Any], step: int) -> dict[str, Any]:
        return dict(super().scalars(group, step),
                    adaptive=rectification(group["betas"][1], step, group["silent_sgd_phase"])[1])

    def direction(self, p: Tensor, g: Tensor, state: dict[str, Any], s: dict[str, Any]) -> Tensor:
        u = super().direction(p, g, state, s)
        return u if s["adaptive"] else g

    def directions(self, ps: list[Tensor], gs: list[Tensor], states: list[dict[str, Any]],
                   s: dict[str, Any]) -> list[Tensor]:
        us = super().directions(ps, gs, states, s)
        return us if s["adaptive"] else gs


class RAdamScheduleFree(_FastScheduleFree):
    """Schedule-Free RAdam, memory-efficient: state z and v; β = betas[0].

    Args:
        params, lr, betas, eps, weight_decay, r, weight_lr_power: as in ``schedule_free.AdamWArguments`` (there is
            no ``warmup_steps``: the rectification is the warmup; no ``cautious``: u has g's sign, see there).
        silent_sgd_phase: True (default): no step while ρ_t ≤ 4; False: plain SGD steps at lr then.
        implementation: ``"auto"`` | ``"reference"`` | ``"foreach"``.
    """

    paths = ("reference", "foreach")
    rule = RAdamScheduleFreeRule()

    def __init__(self, params: Any, lr: float = 0.0025, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, r: float = 0.0, weight_lr_power: float = 2.0,
                 silent_sgd_phase: bool = True, implementation: str = "auto") -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, r=r, weight_lr_power=weight_lr_power,
                        silent_sgd_phase=silent_sgd_phase, cautious=None, cautious_factor=0.0)
        super().__init__(params, defaults, implementation=implementation)

    def _beta(self, group: dict[str, Any]) -> float:
        return group["betas"][0]

    def _check_beta(self, group: dict[str, Any]) -> None:
        check_beta(type(self).__name__, "betas[0]", group["betas"][0])
        checks.boolean(type(self).__name__, "silent_sgd_phase", group["silent_sgd_phase"])

    def _lr_scale(self, group: dict[str, Any], t: int) -> float:
        return rectification(group["betas"][1], t, group["silent_sgd_phase"])[0]


class RAdamScheduleFreeClosure(ClosureForm, RAdamScheduleFree):
    """Schedule-Free RAdam, closure form (no ``train()``/``eval()``; see ``schedule_free_closure``)."""
