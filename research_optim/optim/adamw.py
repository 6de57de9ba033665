"""The library's own AdamW (Loshchilov & Hutter 2019, arXiv 1711.05101) and its rule, the base of C-AdamW.

Plain baselines use torch's fused ``torch.optim.AdamW`` (config ``adamw``); this readable per-tensor rule (config
``lib_adamw``) exists so that cautious masking, Muon's non-matrix group and the Schedule-Free AdamW share one Adam.
Per tensor, at step t::

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

from research_optim.optim import checks
from research_optim.optim.direction import DirectionOptimizer
from research_optim.optim.moments import (
    RMS_ORDERS, adam_direction, adam_direction_many, bias_correction, ema_, ema_many_, ema_square_,
    ema_square_many_, rms_scaled, rms_scaled_many,
)
from research_optim.optim.rule import Rule

__all__ = ["AdamRule", "ADAM", "AdamW", "CautiousAdamW"]


class AdamRule(Rule):
    """Adam's direction from the group's ``betas`` and ``eps``.

    ``first_moment=True``: u = m̂ / (√v̂ + eps) (AdamW); ``False``: u = g / (√v̂ + eps), no m kept — the
    Schedule-Free AdamW base direction, whose interpolation β takes m's place (``betas[0]`` is then not read
    here). ``order`` is the arithmetic of ``moments.rms_scaled``: ``"torch"`` or ``"schedulefree"``.
    """

    counts_steps = True
    paths = ("reference", "foreach", "compiled")

    def __init__(self, first_moment: bool = True, order: str = "torch") -> None:
        if order not in RMS_ORDERS:
            raise ValueError(f"AdamRule: order must be one of {list(RMS_ORDERS)}, got {order!r}")
        self.first_moment, self.order = first_moment, order
        self.buffers = ("exp_avg", "exp_avg_sq") if first_moment else ("exp_avg_sq",)

    def check(self, owner: str, group: dict[str, Any]) -> None:
        checks.betas(owner, group["betas"])
        checks.non_negative(owner, "eps", group["eps"])

    def init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        for key in self.buffers:
            state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def scalars(self, group: dict[str, Any], step: int) -> dict[str, Any]:
        beta1, beta2 = group["betas"]
        bias_correction2 = bias_correction(beta2, step)
        return dict(beta1=beta1, beta2=beta2, eps=group["eps"], bias_correction1=bias_correction(beta1, step),
                    bias_correction2=bias_correction2, bias_correction2_sqrt=bias_correction2**0.5)

    def direction(self, p: Tensor, g: Tensor, state: dict[str, Any], s: dict[str, Any]) -> Tensor:
        ema_square_(state["exp_avg_sq"], g, s["beta2"])
        if not self.first_moment:
            return rms_scaled(g, state["exp_avg_sq"], s, self.order)
        ema_(state["exp_avg"], g, s["beta1"])
        return adam_direction(state["exp_avg"], state["exp_avg_sq"], s)

    def directions(self, ps: list[Tensor], gs: list[Tensor], states: list[dict[str, Any]],
                   s: dict[str, Any]) -> list[Tensor]:
        vs = [st["exp_avg_sq"] for st in states]
        ema_square_many_(vs, gs, s["beta2"])
        if not self.first_moment:
            return rms_scaled_many(gs, vs, s, self.order)
        ms = [st["exp_avg"] for st in states]
        ema_many_(ms, gs, s["beta1"])
        return adam_direction_many(ms, vs, s)

    def sign_source(self, g: Tensor, state: dict[str, Any]) -> Tensor | None:
        return state["exp_avg"] if self.first_moment else g  # the denominator √v̂ + eps is positive


ADAM = AdamRule()


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
        implementation: ``"auto"`` | ``"reference"`` | ``"foreach"`` | ``"compiled"`` (see
            ``research_optim.optim.implementation``).
    """

    rule = ADAM

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
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, cautious=cautious,
                        cautious_factor=cautious_factor)
        super().__init__(params, defaults, implementation)


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
