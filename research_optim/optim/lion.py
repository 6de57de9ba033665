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

from research_optim.optim.direction import DirectionOptimizer, check_betas
from research_optim.optim.implementation import call_compiled, scalar

__all__ = ["Lion", "CautiousLion", "lion_direction", "lion_momentum_update_"]


def lion_direction(exp_avg: Tensor, grad: Tensor, beta1: float) -> Tensor:
    """u = sign(β1·m + (1 − β1)·g) (a new tensor; ``exp_avg`` is not modified)."""
    return torch.lerp(exp_avg, grad, 1.0 - beta1).sign_()


def lion_momentum_update_(exp_avg: Tensor, grad: Tensor, beta2: float) -> None:
    """m ← β2·m + (1 − β2)·g, in place."""
    exp_avg.lerp_(grad, 1.0 - beta2)


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
        implementation: ``"auto"`` | ``"reference"`` | ``"compiled"`` (see ``research_optim.optim.implementation``).
    """

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
        defaults = dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay, cautious=cautious,
                        cautious_factor=cautious_factor)
        super().__init__(params, defaults, implementation)

    def _validate_group(self, group: dict[str, Any]) -> None:
        check_betas(group["betas"], type(self).__name__)

    def _init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _direction(self, grad: Tensor, state: dict[str, Any], group: dict[str, Any]) -> Tensor:
        return lion_direction(state["exp_avg"], grad, group["betas"][0])

    def _after_update(self, grad: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        lion_momentum_update_(state["exp_avg"], grad, group["betas"][1])

    def _compiled_step(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor],
                       states: list[dict[str, Any]]) -> Any:
        from research_optim.optim.fused_direction import lion_step  # imports this module

        beta1, beta2 = group["betas"]
        return call_compiled(lion_step, params, grads, [s["exp_avg"] for s in states], scalar(group["lr"]),
                                   scalar(group["weight_decay"]), scalar(beta1), scalar(beta2), group["cautious"],
                                   float(group["cautious_factor"]))


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
