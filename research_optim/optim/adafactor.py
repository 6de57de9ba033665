"""Adafactor (Shazeer & Stern 2018, arXiv 1804.04235); ``torch.optim.Adafactor`` is the reference.

A factored second moment — for a matrix (and the last two dimensions of any tensor) a row and a column average of
g², whose outer product divided by their mean estimates v at O(rows + cols) memory; a full average for vectors —
and a step size relative to the parameter's scale, per tensor at step t::

    β̂2 = 1 − t^τ                     (τ = beta2_decay, −0.8)
    R ← lerp(R, mean_cols(g²), 1 − β̂2)      C ← lerp(C, mean_rows(g²), 1 − β̂2)      V̂ = R·C / mean(R)
    U = g / √max(V̂, ε1²)                     Û = U / max(1, RMS(U) / d)
    α = max(ε2, RMS(p)) · min(lr, 1/√t)
    p ← p·(1 − lr·λ) − α·Û

Bit for bit ``torch.optim.Adafactor`` (tested; ``eps=(None, 1e-3)``: ε1 is the parameter dtype's machine epsilon).
Like torch's, every step reads ‖p‖ and ‖U‖ on the host (two syncs per tensor), so there is no multi-tensor twin:
a sync-free one would not match torch's arithmetic — ``implementation`` is ``"reference"`` only. Sharded (FSDP):
the row and column statistics R, C are kept whole on every rank (rows + cols numbers), from the gathered g.

**Cautious Adafactor.** Û has the sign of g, so a cautious mask over torch's rule would only drop coordinates where
g = 0. With ``beta1`` set, a first moment m ← lerp(m, Û, 1 − β1) of the clipped update becomes the direction, as in
timm's and optax's Adafactor with momentum, and the mask φ(m∘g) acts on it (timm ``cadafactor``'s mask); the step
is then p ← p·(1 − lr·λ) − α·m∘φ. ``cautious`` without ``beta1`` is refused. (timm's Adafactor is fairseq's, with a
different ε, factorisation and lr: a different optimizer; only the mask is the same.)
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from research_optim.optim import checks
from research_optim.optim.direction import DirectionOptimizer
from research_optim.optim.moments import ema_
from research_optim.optim.rule import Rule
from research_optim.optim.sharded import shard_like, whole

__all__ = ["AdafactorRule", "ADAFACTOR", "Adafactor", "CautiousAdafactor"]


class AdafactorRule(Rule):
    """torch's Adafactor rule, with an optional first moment (``beta1``) of the clipped update."""

    counts_steps = True
    paths = ("reference",)

    def check(self, owner: str, group: dict[str, Any]) -> None:
        checks.at_most(owner, "beta2_decay", group["beta2_decay"], 0.0)
        eps = group["eps"]
        checks.sequence(owner, "eps", eps, 2, "(eps1 or None, eps2)")
        if eps[0] is not None:
            checks.non_negative(owner, "eps[0]", eps[0])
        checks.non_negative(owner, "eps[1]", eps[1])
        checks.at_least(owner, "d", group["d"], 1.0)
        if group["beta1"] is not None:
            checks.unit_interval(owner, "beta1", group["beta1"])
        elif group["cautious"] is not None:
            raise ValueError(f"{owner}: cautious={group['cautious']!r} needs beta1 (a first moment): without it the "
                             "direction has the sign of g and the mask would only drop g = 0 coordinates")

    def init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        if p.dim() > 1:
            # whole (not sharded) even for a sharded p: rows + cols numbers, the same on every rank
            state["row_var"] = torch.zeros((*p.shape[:-1], 1), dtype=p.dtype, device=p.device)  # over the last dim
            state["col_var"] = torch.zeros((*p.shape[:-2], 1, p.shape[-1]), dtype=p.dtype, device=p.device)  # before
        else:
            state["variance"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if group["beta1"] is not None:
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def scalars(self, group: dict[str, Any], step: int) -> dict[str, Any]:
        return dict(one_minus_beta2_t=float(step) ** group["beta2_decay"], eps1=group["eps"][0], d=group["d"],
                    beta1=group["beta1"])

    def direction(self, p: Tensor, g: Tensor, state: dict[str, Any], s: dict[str, Any]) -> Tensor:
        eps1 = torch.finfo(p.dtype).eps if s["eps1"] is None else s["eps1"]
        if g.dim() > 1:
            row_var, col_var, full = state["row_var"], state["col_var"], whole(g)  # a sharded g is gathered
            # (g·g).mean over a dimension, without materialising g²
            row_var.lerp_(torch.linalg.vector_norm(full, dim=-1, keepdim=True).square_().div_(g.size(-1)),
                          s["one_minus_beta2_t"])
            col_var.lerp_(torch.linalg.vector_norm(full, dim=-2, keepdim=True).square_().div_(g.size(-2)),
                          s["one_minus_beta2_t"])
            var_estimate = shard_like((row_var @ col_var).div_(row_var.mean(dim=-2, keepdim=True).clamp_(min=eps1)),
                                      g)
        else:
            state["variance"].lerp_(g * g, s["one_minus_beta2_t"])
            var_estimate = state["variance"].clone()
        update = var_estimate.clamp_(min=eps1 * eps1).rsqrt_().mul_(g)  # ε1 squared: it bounds √V̂
        if s["beta1"] is None:
            return update  # clipped by the step size (torch's arithmetic)
        return ema_(state["exp_avg"], update.div_(_clip(update, s["d"])), s["beta1"])

    def step_size(self, p: Tensor, u: Tensor, state: dict[str, Any], group: dict[str, Any]) -> float:
        """α / max(1, RMS(U)/d) (α alone with a first moment, whose input is already clipped)."""
        lr, t = group["lr"], state["step"]
        alpha = max(group["eps"][1], whole(p.norm(2)).item() / (p.numel() ** 0.5)) * min(lr, 1 / (float(t) ** 0.5))
        return alpha if group["beta1"] is not None else alpha / _clip(u, group["d"])


def _clip(update: Tensor, d: float) -> float:
    """max(1, RMS(U) / d): the update is scaled down to RMS d at most."""
    return max(1.0, whole(update.norm(2)).item() / ((update.numel() ** 0.5) * d))


ADAFACTOR = AdafactorRule()


class Adafactor(DirectionOptimizer):
    """Adafactor as torch's, plus an optional first moment (see the module docstring).

    Args:
        params: parameters or param-group dicts.
        lr: the maximum relative step size and the decay's lr (> 0); torch's default 1e-2.
        beta2_decay: τ ≤ 0, β̂2 = 1 − t^τ; default −0.8.
        eps: (ε1 or None, ε2): ε1 ≥ 0 floors √V̂ (None: the parameter dtype's machine epsilon), ε2 ≥ 0 floors the
            parameter RMS of α; default (None, 1e-3).
        d: clipping threshold ≥ 1 of the update's RMS; default 1.
        weight_decay: decoupled weight decay λ ≥ 0 (p ← p·(1 − lr·λ)); default 0.
        beta1: None (torch's Adafactor) or the first-moment rate in [0, 1) of the clipped update.
        cautious, cautious_factor: φ masking of the direction (needs ``beta1``; see ``research_optim.optim.cautious``).
        implementation: ``"auto"`` | ``"reference"`` (the only path; see the module docstring).
    """

    rule = ADAFACTOR

    def __init__(
        self,
        params: Any,
        lr: float = 1e-2,
        beta2_decay: float = -0.8,
        eps: Sequence[float | None] = (None, 1e-3),
        d: float = 1.0,
        weight_decay: float = 0.0,
        beta1: float | None = None,
        cautious: str | None = None,
        cautious_factor: float = 0.0,
        implementation: str = "auto",
    ) -> None:
        defaults = dict(lr=lr, beta2_decay=beta2_decay, eps=eps, d=d, weight_decay=weight_decay, beta1=beta1,
                        cautious=cautious, cautious_factor=cautious_factor)
        super().__init__(params, defaults, implementation)


class CautiousAdafactor(Adafactor):
    """C-Adafactor: ``Adafactor`` with a first moment (``beta1=0.9``) and ``cautious="indicator_mean"`` — timm
    ``cadafactor``'s momentum and mask over torch's Adafactor. Arguments: see ``Adafactor``."""

    def __init__(self, params: Any, beta1: float | None = 0.9, cautious: str | None = "indicator_mean",
                 **kwargs: Any) -> None:
        super().__init__(params, beta1=beta1, cautious=cautious, **kwargs)
