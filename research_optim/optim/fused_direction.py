"""Multi-tensor step functions of the direction optimizers (Lion, AdamW, SGD), made to be ``torch.compile``d.

Each function updates a list of tensors of one device and dtype in place with the same arithmetic as the per-tensor
reference (``DirectionOptimizer.step`` with ``lion_direction``, ``adam_direction``, ``momentum_direction`` and
``cautious.cautious_direction``), and returns the number of coordinates the cautious mask removed (a device tensor,
or None without caution). Compiled, inductor fuses each tensor's update into one pass over memory (plus one
reduction pass for the φ that rescale by a mean). Written for compilation:

* hyperparameters are 0-dim tensors (see ``implementation.scalar``) — no Python branch may depend on them, so the
  weight decay is always applied (a multiplication by exactly 1.0 when λ = 0: the reference's skipped branch);
* ``phi``, ``cautious_factor``, ``nesterov`` and ``momentum == 0`` are static (a new value compiles once more);
* ``alpha=``/``value=`` arguments need numbers, so those products are written out (u·lr instead of alpha=−lr):
  float32 results agree with the reference to rounding (tested at 1e-6 relative).
"""
from __future__ import annotations

import torch
from torch import Tensor

from research_optim.optim.cautious import PHI_FUNCTIONS, aligned, mask_dtype
from research_optim.optim.lion import lion_direction, lion_momentum_update_

__all__ = ["cautious_masked", "lion_step", "adamw_step", "sgd_step"]


def cautious_masked(u: Tensor, g: Tensor, phi: str, cautious_factor: float,
                    sign_of: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(u ∘ φ(u ∘ g), masked count) — ``cautious.cautious_direction`` with the count returned, not accumulated.

    ``sign_of``: a tensor with u's signs from which the alignment is cheaper to compute (AdamW: m, since
    u = m̂ / (√v̂ + eps) with a positive denominator; timm ``cadamw`` masks with m·g too). Compiled, this keeps the
    preconditioner's sqrt and division out of the reduction pass that φ's mean needs (4× faster on CPU)."""
    keep = aligned(u if sign_of is None else sign_of, g, phi)
    mask = PHI_FUNCTIONS[phi](keep, cautious_factor, mask_dtype(u.dtype)).to(u.dtype)
    return u * mask, keep.numel() - keep.sum()


def _apply(p: Tensor, u: Tensor, g: Tensor, lr: Tensor, weight_decay: Tensor, phi: str | None,
           cautious_factor: float, masked: list[Tensor], sign_of: Tensor | None = None) -> None:
    """p ← p·(1 − lr·λ) − lr·φ-masked u (``direction.decoupled_step_`` with tensor hyperparameters)."""
    if phi is not None:
        u, count = cautious_masked(u, g, phi, cautious_factor, sign_of)
        masked.append(count)
    p.mul_(1.0 - lr * weight_decay)
    p.sub_(u * lr)


def _total(masked: list[Tensor]) -> Tensor | None:
    return torch.stack(masked).sum() if masked else None


def lion_step(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], lr: Tensor, weight_decay: Tensor,
              beta1: Tensor, beta2: Tensor, phi: str | None, cautious_factor: float) -> Tensor | None:
    masked: list[Tensor] = []
    for p, g, m in zip(params, grads, exp_avgs):
        _apply(p, lion_direction(m, g, beta1), g, lr, weight_decay, phi, cautious_factor, masked)
        lion_momentum_update_(m, g, beta2)
    return _total(masked)


def adamw_step(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor],
               lr: Tensor, weight_decay: Tensor, beta1: Tensor, beta2: Tensor, eps: Tensor,
               bias_correction1: Tensor, bias_correction2_sqrt: Tensor, phi: str | None,
               cautious_factor: float) -> Tensor | None:
    masked: list[Tensor] = []
    for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs):
        m.lerp_(g, 1.0 - beta1)
        v.mul_(beta2).add_(g * g * (1.0 - beta2))
        denom = (v.sqrt() / bias_correction2_sqrt).add_(eps)
        _apply(p, (m / denom).div_(bias_correction1), g, lr, weight_decay, phi, cautious_factor, masked, sign_of=m)
    return _total(masked)


def sgd_step(params: list[Tensor], grads: list[Tensor], buffers: list[Tensor], lr: Tensor, weight_decay: Tensor,
             momentum: Tensor, nesterov: bool, has_momentum: bool, phi: str | None,
             cautious_factor: float) -> Tensor | None:
    masked: list[Tensor] = []
    for i, (p, g) in enumerate(zip(params, grads)):
        u = g
        if has_momentum:
            buf = buffers[i]
            buf.mul_(momentum).add_(g)
            u = g + buf * momentum if nesterov else buf
        _apply(p, u, g, lr, weight_decay, phi, cautious_factor, masked)
    return _total(masked)
