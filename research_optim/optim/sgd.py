"""The library's SGD with (Nesterov) momentum and decoupled weight decay, the base of cautious SGD.

Plain baselines use ``torch.optim.SGD`` (config ``sgd``); this readable per-tensor rule (config ``lib_sgd``) exists
so that cautious masking is one transform over every momentum optimizer. Per tensor (dampening 0, Sutskever et al.
2013 / PyTorch form)::

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

from research_optim.optim import checks
from research_optim.optim.direction import DirectionOptimizer
from research_optim.optim.moments import heavy_ball_, heavy_ball_many_
from research_optim.optim.rule import Rule

__all__ = ["MomentumRule", "MOMENTUM", "SGD"]


class MomentumRule(Rule):
    """Heavy-ball momentum (``moments.heavy_ball_``) from the group's ``momentum`` and ``nesterov``; u = g when
    ``momentum`` is 0 (then no buffer is kept)."""

    buffers = ("momentum_buffer",)
    paths = ("reference", "foreach", "compiled")

    def check(self, owner: str, group: dict[str, Any]) -> None:
        checks.unit_interval(owner, "momentum", group["momentum"])
        checks.boolean(owner, "nesterov", group["nesterov"])
        if group["nesterov"] and group["momentum"] == 0.0:
            raise ValueError(f"{owner}: nesterov=True needs momentum in (0, 1), got momentum={group['momentum']}")

    def init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        if group["momentum"] != 0.0:
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def scalars(self, group: dict[str, Any], step: int) -> dict[str, Any]:
        return dict(momentum=group["momentum"], nesterov=group["nesterov"], heavy_ball=group["momentum"] != 0.0)

    def direction(self, p: Tensor, g: Tensor, state: dict[str, Any], s: dict[str, Any]) -> Tensor:
        if not s["heavy_ball"]:
            return g
        return heavy_ball_(state["momentum_buffer"], g, s["momentum"], s["nesterov"])

    def directions(self, ps: list[Tensor], gs: list[Tensor], states: list[dict[str, Any]],
                   s: dict[str, Any]) -> list[Tensor]:
        if not s["heavy_ball"]:
            return gs
        return heavy_ball_many_([st["momentum_buffer"] for st in states], gs, s["momentum"], s["nesterov"])


MOMENTUM = MomentumRule()


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
        implementation: ``"auto"`` | ``"reference"`` | ``"foreach"`` | ``"compiled"`` (see
            ``research_optim.optim.implementation``).
    """

    rule = MOMENTUM

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
