"""The library's own AdamW (Loshchilov & Hutter 2019, arXiv 1711.05101), the base of C-AdamW.

Plain baselines use torch's fused ``torch.optim.AdamW``; this readable per-tensor rule exists so that cautious
masking is one transform over every momentum optimizer. Per tensor, at step t::

    m = β1·m + (1 − β1)·g                  v = β2·v + (1 − β2)·g²
    m̂ = m / (1 − β1^t)                     v̂ = v / (1 − β2^t)
    u = m̂ / (√v̂ + eps)
    p = p·(1 − lr·λ) − lr·u                # decoupled weight decay λ, never masked

Verified against ``torch.optim.AdamW`` (float64). C-AdamW (Liang et al. 2024, arXiv 2411.16085) replaces u by
u∘φ(u∘g); sign(u) = sign(m_t), the first moment after its update — timm ``cadamw`` masks ``exp_avg`` with
I(m·g > 0) / max(mean, 1e-3), which is ``cautious="indicator_mean"`` here.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from research_optim.optim.direction import DirectionOptimizer, check_betas, check_eps
from research_optim.optim.implementation import COMPILE_FAILED, call_compiled, scalar

__all__ = ["AdamW", "CautiousAdamW", "adam_moments_update_", "adam_direction"]


def adam_moments_update_(exp_avg: Tensor, exp_avg_sq: Tensor, grad: Tensor, beta1: float, beta2: float) -> None:
    """m ← β1·m + (1 − β1)·g and v ← β2·v + (1 − β2)·g², in place."""
    exp_avg.lerp_(grad, 1.0 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)


def adam_direction(exp_avg: Tensor, exp_avg_sq: Tensor, step: int, beta1: float, beta2: float, eps: float) -> Tensor:
    """u = m̂ / (√v̂ + eps) with the bias corrections of step ``step`` (≥ 1); a new tensor."""
    bias_correction1 = 1.0 - beta1**step
    bias_correction2_sqrt = (1.0 - beta2**step) ** 0.5
    denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
    return (exp_avg / denom).div_(bias_correction1)


class AdamW(DirectionOptimizer):
    """AdamW with an optional cautious mask.

    Args:
        params: parameters or param-group dicts.
        lr: learning rate (> 0).
        betas: (β1, β2), each in [0, 1).
        eps: added to √v̂ (≥ 0).
        weight_decay: decoupled weight decay λ (≥ 0); torch's default 1e-2.
        cautious: φ name for cautious masking (see ``research_optim.optim.cautious``) or None.
        cautious_factor: weight of misaligned coordinates for φ = ``soft`` (in [0, 1]).
        implementation: ``"auto"`` | ``"reference"`` | ``"compiled"`` (see ``research_optim.optim.implementation``).
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        cautious: str | None = None,
        cautious_factor: float = 0.0,
        implementation: str = "auto",
    ) -> None:
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, cautious=cautious,
                        cautious_factor=cautious_factor)
        super().__init__(params, defaults, implementation)

    def _validate_group(self, group: dict[str, Any]) -> None:
        check_betas(group["betas"], type(self).__name__)
        check_eps(group["eps"], type(self).__name__)

    def _init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        state["step"] = 0  # a Python int: bias corrections need no device read
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _direction(self, grad: Tensor, state: dict[str, Any], group: dict[str, Any]) -> Tensor:
        beta1, beta2 = group["betas"]
        state["step"] += 1
        adam_moments_update_(state["exp_avg"], state["exp_avg_sq"], grad, beta1, beta2)
        return adam_direction(state["exp_avg"], state["exp_avg_sq"], state["step"], beta1, beta2, group["eps"])

    def _bucket_key(self, p: Tensor, state: dict[str, Any]) -> Any:
        return (p.device, p.dtype, state["step"])  # one bias correction per compiled call

    def _compiled_step(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor],
                       states: list[dict[str, Any]]) -> Any:
        from research_optim.optim.fused_direction import adamw_step  # imports lion, which imports direction

        beta1, beta2 = group["betas"]
        step = states[0]["step"] + 1
        masked = call_compiled(
            adamw_step, params, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], scalar(group["lr"]),
            scalar(group["weight_decay"]), scalar(beta1), scalar(beta2), scalar(group["eps"]),
            scalar(1.0 - beta1**step), scalar((1.0 - beta2**step) ** 0.5), group["cautious"],
            float(group["cautious_factor"]))
        if masked is not COMPILE_FAILED:  # a failed compile changed nothing: the reference path takes the step
            for state in states:
                state["step"] = step
        return masked


class CautiousAdamW(AdamW):
    """C-AdamW (Liang et al. 2024): ``AdamW`` with ``cautious="indicator_mean"`` — timm ``cadamw``.

    Defaults are timm ``cadamw``'s (its ``AdamWLegacy``): lr 1e-3, betas (0.9, 0.999), eps 1e-8, wd 1e-2.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        cautious: str | None = "indicator_mean",
        cautious_factor: float = 0.0,
        implementation: str = "auto",
    ) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, cautious=cautious,
                         cautious_factor=cautious_factor, implementation=implementation)
