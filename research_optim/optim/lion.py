"""Lion — EvoLved Sign Momentum (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", arXiv 2302.06675).

Algorithm 2 of the paper, per tensor::

    c = β1·m + (1 − β1)·g            # = lerp(g, m, β1): interpolation, not the momentum itself
    p = p·(1 − lr·λ) − lr·sign(c)    # decoupled weight decay λ
    m = β2·m + (1 − β2)·g            # the momentum is updated AFTER the step, with a different β

One state buffer (``exp_avg``), no eps, no bias correction. Verified against timm ``lion`` and ``lion_pytorch.Lion``.

Cautious Lion (C-Lion, Liang et al. 2024, arXiv 2411.16085) masks the sign direction u = sign(c):
p ← p·(1 − lr·λ) − lr·u∘φ(u∘g). timm ``clion`` is ``cautious="indicator_mean"``; lion-pytorch's
``cautious_lion.Lion(cautious_factor=f)`` is ``cautious="soft", cautious_factor=f``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from research_optim.optim import checks
from research_optim.optim.direction import DirectionOptimizer
from research_optim.optim.implementation import lerp
from research_optim.optim.moments import ema_, ema_many_
from research_optim.optim.rule import Rule

__all__ = ["LionRule", "LION", "Lion", "CautiousLion"]


class LionRule(Rule):
    """u = sign(lerp(m, g, 1 − β1)), then m ← lerp(m, g, 1 − β2): the momentum is updated after u is formed."""

    buffers = ("exp_avg",)
    paths = ("reference", "foreach", "compiled")

    def check(self, owner: str, group: dict[str, Any]) -> None:
        checks.betas(owner, group["betas"])

    def init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def scalars(self, group: dict[str, Any], step: int) -> dict[str, Any]:
        beta1, beta2 = group["betas"]
        return dict(beta1=beta1, beta2=beta2)

    def direction(self, p: Tensor, g: Tensor, state: dict[str, Any], s: dict[str, Any]) -> Tensor:
        u = lerp(state["exp_avg"], g, 1.0 - s["beta1"]).sign_()
        ema_(state["exp_avg"], g, s["beta2"])
        return u

    def directions(self, ps: list[Tensor], gs: list[Tensor], states: list[dict[str, Any]],
                   s: dict[str, Any]) -> list[Tensor]:
        ms = [st["exp_avg"] for st in states]
        us = torch._foreach_lerp(ms, gs, 1.0 - s["beta1"])
        torch._foreach_sign_(us)
        ema_many_(ms, gs, s["beta2"])
        return us


LION = LionRule()


class Lion(DirectionOptimizer):
    """Lion (Chen et al. 2023). Paper practice: lr 3–10× smaller than AdamW's and weight decay 3–10× larger (keep
    lr·λ), betas (0.95, 0.98) for stability; weaker than AdamW below batch size ~64.

    Args:
        params: parameters or param-group dicts.
        lr: learning rate (> 0).
        betas: (β1, β2), each in [0, 1): interpolation for the update, momentum decay.
        weight_decay: decoupled weight decay λ (≥ 0).
        cautious: φ name for cautious masking (see ``research_optim.optim.cautious``) or None.
        cautious_factor: weight of misaligned coordinates for φ = ``soft`` (in [0, 1]).
        implementation: ``"auto"`` | ``"reference"`` | ``"foreach"`` | ``"compiled"`` (see
            ``research_optim.optim.implementation``).
    """

    rule = LION

    def __init__(
        self,
        params: Any,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        cautious: str | None = None,
        cautious_factor: float = 0.0,
        implementation: str = "auto",
    ) -> None:
        defaults = dict(lr=lr, betas=betas, weight_decay=weight_decay, cautious=cautious,
                        cautious_factor=cautious_factor)
        super().__init__(params, defaults, implementation)


class CautiousLion(Lion):
    """C-Lion (Liang et al. 2024): ``Lion`` with ``cautious="indicator_mean"`` — timm ``clion``.

    Defaults follow timm ``clion`` / the paper (Lion's: lr 1e-4, betas (0.9, 0.99), wd 0).
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        cautious: str | None = "indicator_mean",
        cautious_factor: float = 0.0,
        implementation: str = "auto",
    ) -> None:
        super().__init__(params, lr=lr, betas=betas, weight_decay=weight_decay, cautious=cautious,
                         cautious_factor=cautious_factor, implementation=implementation)
