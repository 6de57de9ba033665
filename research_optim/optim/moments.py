"""The moving averages every rule is built from — each written once, per tensor and as its multi-tensor twin.

* :func:`ema_` — the first moment / EMA momentum  m ← β·m + (1 − β)·x  (Adam's m, Lion's m, Muon's buffer);
* :func:`ema_square_` — Adam's second moment  v ← β2·v + (1 − β2)·g²;
* :func:`rms_scaled` — x / (√v̂ + eps) with v̂ = v / (1 − β2^t), and :func:`adam_direction` = m̂ / (√v̂ + eps);
* :func:`inverse_rms` — the preconditioner P = 1 / (√v̂ + eps) itself (the line search also needs Σ g²·P);
* :func:`heavy_ball_` — SGD momentum  b ← μ·b + g, u = b or g + μ·b (Nesterov).

Each ``*_many`` twin does the same ops in the same order as ``torch._foreach_*`` calls on lists of one device and
dtype (see ``implementation.per_bucket``), so it is bit-identical to the per-tensor function on CPU. Per-tensor
functions take hyperparameters as numbers (eager) or 0-dim tensors (compiled steps; see ``implementation``).

**Arithmetic orders.** Equal formulas round differently in different packages; where a reference package must be
matched bit for bit, its order is a named variant of the one function, not a copy:

* ``"torch"`` — ``torch.optim.AdamW`` / timm: ``m.lerp_(g, 1 − β1)``, ``v.mul_(β2).addcmul_(g, g, 1 − β2)``,
  x / (√v / √(1 − β2^t) + eps);
* ``"schedulefree"`` — ``schedulefree`` 1.4: the torch second moment, x / (√(v / (1 − β2^t)) + eps), and (the
  upstream repository's ``inner_momentum``) m ← m·β + (1 − β)·g as ``m.mul_(β).add_(g, alpha=1 − β)``;
* ``"salsa"`` — ``salsa-optimizer`` 0.1.0: ``m.mul_(β).add_(g·(1 − β))``, ``v.mul_(β2).add_(g²·(1 − β2))`` (two
  rounded products and a sum), P = 1 / (√(v / (1 − β2^t)) + eps).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from research_optim.optim.implementation import add, add_, addcmul_, div, div_, lerp_

__all__ = [
    "EMA_ORDERS", "RMS_ORDERS", "bias_correction", "ema_", "ema_many_", "ema_square_", "ema_square_many_",
    "rms_scaled", "rms_scaled_many", "adam_direction", "adam_direction_many", "inverse_rms", "inverse_rms_many",
    "heavy_ball_", "heavy_ball_many_",
]

EMA_ORDERS = ("torch", "salsa", "schedulefree")
RMS_ORDERS = ("torch", "schedulefree")


def bias_correction(beta: float, step: int) -> float:
    """1 − β^step (step ≥ 1)."""
    return 1.0 - beta**step


# -- first and second moment ------------------------------------------------------------------------------------
def ema_(avg: Tensor, x: Tensor, beta: Any, order: str = "torch") -> Tensor:
    """avg ← β·avg + (1 − β)·x, in place."""
    if order == "salsa":
        return avg.mul_(beta).add_(x.mul(1.0 - beta))
    if order == "schedulefree":
        return add_(avg.mul_(beta), x, 1.0 - beta)
    return lerp_(avg, x, 1.0 - beta)


def ema_many_(avgs: list[Tensor], xs: list[Tensor], beta: float, order: str = "torch") -> None:
    if order == "salsa":
        torch._foreach_mul_(avgs, beta)
        torch._foreach_add_(avgs, torch._foreach_mul(xs, 1.0 - beta))
    elif order == "schedulefree":
        torch._foreach_mul_(avgs, beta)
        torch._foreach_add_(avgs, xs, alpha=1.0 - beta)
    else:
        torch._foreach_lerp_(avgs, xs, 1.0 - beta)


def ema_square_(v: Tensor, g: Tensor, beta2: Any, order: str = "torch") -> Tensor:
    """v ← β2·v + (1 − β2)·g², in place."""
    v.mul_(beta2)
    if order == "salsa":
        return v.add_(g.square().mul_(1.0 - beta2))
    return addcmul_(v, g, g, 1.0 - beta2)


def ema_square_many_(vs: list[Tensor], gs: list[Tensor], beta2: float, order: str = "torch") -> None:
    torch._foreach_mul_(vs, beta2)
    if order == "salsa":
        squares = torch._foreach_mul(gs, gs)  # g·g is g.square()'s arithmetic
        torch._foreach_mul_(squares, 1.0 - beta2)
        torch._foreach_add_(vs, squares)
    else:
        torch._foreach_addcmul_(vs, gs, gs, value=1.0 - beta2)


# -- preconditioned directions ----------------------------------------------------------------------------------
def rms_scaled(x: Tensor, v: Tensor, s: dict[str, Any], order: str = "torch") -> Tensor:
    """x / (√v̂ + eps), v̂ = v / bias_correction2, as a new tensor (``order``: ``"torch"`` or ``"schedulefree"``).
    ``s``: the rule's scalars ``bias_correction2``, ``bias_correction2_sqrt`` (taken on the host: a compiled kernel
    would take a scalar square root once per vector of elements) and ``eps``."""
    if order == "schedulefree":
        return x / div(v, s["bias_correction2"]).sqrt().add_(s["eps"])
    return x / div(v.sqrt(), s["bias_correction2_sqrt"]).add_(s["eps"])


def rms_scaled_many(xs: list[Tensor], vs: list[Tensor], s: dict[str, Any], order: str = "torch") -> list[Tensor]:
    if order == "schedulefree":
        denom = torch._foreach_div(vs, s["bias_correction2"])
        torch._foreach_sqrt_(denom)
    else:
        denom = torch._foreach_sqrt(vs)
        torch._foreach_div_(denom, s["bias_correction2_sqrt"])
    torch._foreach_add_(denom, s["eps"])
    return torch._foreach_div(xs, denom)


def adam_direction(m: Tensor, v: Tensor, s: dict[str, Any]) -> Tensor:
    """m̂ / (√v̂ + eps) in torch's order: (m / (√v / √bc2 + eps)) / bc1, a new tensor (``s``: as :func:`rms_scaled`'s,
    and ``bias_correction1``)."""
    return div_(rms_scaled(m, v, s), s["bias_correction1"])


def adam_direction_many(ms: list[Tensor], vs: list[Tensor], s: dict[str, Any]) -> list[Tensor]:
    out = rms_scaled_many(ms, vs, s)
    torch._foreach_div_(out, s["bias_correction1"])
    return out


def inverse_rms(v: Tensor, bias_correction2: float, eps: float) -> Tensor:
    """P = 1 / (√(v / bias_correction2) + eps), a new tensor (``salsa-optimizer``'s order)."""
    return (v / bias_correction2).sqrt_().add_(eps).reciprocal_()


def inverse_rms_many(vs: list[Tensor], bias_correction2: float, eps: float) -> list[Tensor]:
    out = torch._foreach_div(vs, bias_correction2)
    torch._foreach_sqrt_(out)
    torch._foreach_add_(out, eps)
    torch._foreach_reciprocal_(out)
    return out


# -- heavy-ball momentum ----------------------------------------------------------------------------------------
def heavy_ball_(buf: Tensor, g: Tensor, momentum: Any, nesterov: bool) -> Tensor:
    """b ← μ·b + g in place; returns u = b (the buffer itself) or g + μ·b (Nesterov, a new tensor).

    b starts at 0, so b_1 = g exactly as torch's clone of g (PyTorch / Sutskever et al. 2013 form, dampening 0)."""
    buf.mul_(momentum).add_(g)
    return add(g, buf, momentum) if nesterov else buf


def heavy_ball_many_(bufs: list[Tensor], gs: list[Tensor], momentum: float, nesterov: bool) -> list[Tensor]:
    torch._foreach_mul_(bufs, momentum)
    torch._foreach_add_(bufs, gs)
    return torch._foreach_add(gs, bufs, alpha=momentum) if nesterov else bufs
