"""The library's SGD with (Nesterov) momentum and decoupled weight decay, the base of cautious SGD.

Plain baselines use ``torch.optim.SGD``; this readable per-tensor rule exists so that cautious masking is one
transform over every momentum optimizer. Per tensor (dampening 0, Sutskever et al. 2013 / PyTorch form)::

    b = μ·b + g                          # b starts at 0, so b_1 = g exactly as torch's clone of g
    u = g + μ·b  (Nesterov)   or   u = b
    p = p·(1 − lr·λ) − lr·u              # decoupled weight decay λ (SGDW), never masked

The weight decay is decoupled (as timm ``sgdw``), not torch's L2 term added to g: a decay inside the momentum
would pass through the cautious mask. With λ = 0 the rule equals ``torch.optim.SGD`` (verified in float64); with
λ > 0 it equals timm ``SGDW`` (which also gives the cautious reference, ``caution=True``).
With ``momentum=0`` the direction is g itself and no buffer is kept.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from research_optim.optim.direction import DirectionOptimizer, check_unit_interval
from research_optim.optim.implementation import call_compiled, scalar

__all__ = ["SGD", "momentum_direction"]


def momentum_direction(buf: Tensor, grad: Tensor, momentum: float, nesterov: bool) -> Tensor:
    """Update ``buf`` ← μ·buf + g in place and return u (``buf`` itself, or g + μ·buf for Nesterov)."""
    buf.mul_(momentum).add_(grad)
    return grad.add(buf, alpha=momentum) if nesterov else buf


class SGD(DirectionOptimizer):
    """SGD with momentum (dampening 0), optional Nesterov, decoupled weight decay and an optional cautious mask.

    Args:
        params: parameters or param-group dicts.
        lr: learning rate (> 0).
        momentum: μ in [0, 1).
        nesterov: use the Nesterov direction g + μ·b (needs μ > 0).
        weight_decay: decoupled weight decay λ (≥ 0).
        cautious: φ name for cautious masking (see ``research_optim.optim.cautious``) or None.
        cautious_factor: weight of misaligned coordinates for φ = ``soft`` (in [0, 1]).
        implementation: ``"auto"`` | ``"reference"`` | ``"compiled"`` (see ``research_optim.optim.implementation``).
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        momentum: float = 0.9,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        cautious: str | None = None,
        cautious_factor: float = 0.0,
        implementation: str = "auto",
    ) -> None:
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, cautious=cautious,
                        cautious_factor=cautious_factor)
        super().__init__(params, defaults, implementation)

    def _validate_group(self, group: dict[str, Any]) -> None:
        owner = type(self).__name__
        check_unit_interval("momentum", group["momentum"], owner)
        if group["nesterov"] and group["momentum"] == 0.0:
            raise ValueError(f"{owner}: nesterov=True needs momentum in (0, 1), got momentum={group['momentum']}")

    def _init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        if group["momentum"] != 0.0:
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _direction(self, grad: Tensor, state: dict[str, Any], group: dict[str, Any]) -> Tensor:
        if group["momentum"] == 0.0:
            return grad
        return momentum_direction(state["momentum_buffer"], grad, group["momentum"], group["nesterov"])

    def _compiled_step(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor],
                       states: list[dict[str, Any]]) -> Any:
        from research_optim.optim.fused_direction import sgd_step  # imports lion, which imports direction

        has_momentum = group["momentum"] != 0.0
        buffers = [s["momentum_buffer"] for s in states] if has_momentum else []
        return call_compiled(sgd_step, params, grads, buffers, scalar(group["lr"]), scalar(group["weight_decay"]),
                                  scalar(group["momentum"]), bool(group["nesterov"]), has_momentum,
                                  group["cautious"], float(group["cautious_factor"]))
