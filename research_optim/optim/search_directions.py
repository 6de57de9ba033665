"""The directions a line search moves along (SaLSA, SLS, Adam-SLS): :data:`DIRECTIONS` by name.

A line search needs two directions per step, not one (p ← p − η·d): ``search`` — built on the current gradient, a
descent direction, with the slope ⟨g, d⟩ the Armijo test compares — and ``step`` — built on the momentum, taken
where no search happens. Each class (a :class:`Directions`) refuses parameters it cannot serve (``check``), keeps
per-tensor statistics (``init_state``, ``update``) and has multi-tensor twins ``update_many`` / ``step_many`` /
``search_many`` (SaLSA's ``implementation="foreach"``), op for op the same arithmetic. The
arithmetic is the rules' (``moments``, ``muon.orthogonalize``), in salsa-optimizer's order (``order="salsa"``) where
SaLSA must match that package bit for bit.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from research_optim.optim.implementation import per_bucket
from research_optim.optim.moments import (
    bias_correction, ema_, ema_many_, ema_square_, ema_square_many_, inverse_rms, inverse_rms_many,
)
from research_optim.optim.muon import ADJUST_LR, orthogonalize

__all__ = ["Directions", "search_each", "AdamDirections", "SgdDirections", "SignDirections", "MuonDirections",
           "DIRECTIONS"]


def _stat(states: list[dict[str, Any]], key: str) -> list[Tensor]:
    return [state[key] for state in states]


class Directions:
    """Base of the searched directions: every parameter is served unless :meth:`check` says otherwise."""

    def check(self, owner: str, group: dict[str, Any]) -> None:
        """Refuse a param group's parameters this direction cannot serve (called for every group added)."""

    def search_many(self, states: list[dict[str, Any]], grads: list[Tensor],
                    k: int) -> tuple[list[Tensor], list[Tensor]]:
        """``search`` for many tensors: (directions, per-tensor slopes); one tensor at a time unless overridden."""
        return search_each(self, states, grads, k)


def search_each(directions: Any, states: list[dict[str, Any]], grads: list[Tensor],
                k: int) -> tuple[list[Tensor], list[Tensor]]:
    """``directions.search`` tensor by tensor: (directions, per-tensor slopes) — the reference of ``search_many``."""
    pairs = [directions.search(state, g, k) for state, g in zip(states, grads)]
    return [d for d, _ in pairs], [slope for _, slope in pairs]


class AdamDirections(Directions):
    """Adam statistics m, v (salsa order), P = 1/(√v̂ + eps): search d = P·g, slope Σ g²·P; step d = P·m̂."""

    def __init__(self, betas: Sequence[float], eps: float) -> None:
        self.beta1, self.beta2 = betas
        self.eps = eps

    def init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def update(self, state: dict[str, Any], g: Tensor) -> None:
        ema_square_(state["exp_avg_sq"], g, self.beta2, order="salsa")
        ema_(state["exp_avg"], g, self.beta1, order="salsa")

    def update_many(self, states: list[dict[str, Any]], grads: list[Tensor]) -> None:
        def bucket(gs: list[Tensor], ss: list[dict[str, Any]]) -> None:
            ema_square_many_(_stat(ss, "exp_avg_sq"), gs, self.beta2, order="salsa")
            ema_many_(_stat(ss, "exp_avg"), gs, self.beta1, order="salsa")
        per_bucket(bucket, grads, states)

    def search(self, state: dict[str, Any], g: Tensor, k: int) -> tuple[Tensor, Tensor]:
        precond = inverse_rms(state["exp_avg_sq"], bias_correction(self.beta2, k), self.eps)
        return precond * g, (g.square() * precond).sum()

    def search_many(self, states: list[dict[str, Any]], grads: list[Tensor],
                    k: int) -> tuple[list[Tensor], list[Tensor]]:
        def bucket(gs: list[Tensor], ss: list[dict[str, Any]]) -> list[tuple[Tensor, Tensor]]:
            precond = inverse_rms_many(_stat(ss, "exp_avg_sq"), bias_correction(self.beta2, k), self.eps)
            terms = torch._foreach_mul(gs, gs)  # g·g is g.square()'s arithmetic
            torch._foreach_mul_(terms, precond)
            slopes = [term.sum() for term in terms]
            del terms  # freed before d = P·g is formed in P's memory: 8 transient bytes/param, as a speed-up step
            torch._foreach_mul_(precond, gs)
            return list(zip(precond, slopes))
        pairs = per_bucket(bucket, grads, states)
        return [d for d, _ in pairs], [slope for _, slope in pairs]

    def step(self, state: dict[str, Any], g: Tensor, k: int) -> Tensor:
        precond = inverse_rms(state["exp_avg_sq"], bias_correction(self.beta2, k), self.eps)
        return precond * (state["exp_avg"] / bias_correction(self.beta1, k))

    def step_many(self, states: list[dict[str, Any]], grads: list[Tensor], k: int) -> list[Tensor]:
        def bucket(gs: list[Tensor], ss: list[dict[str, Any]]) -> list[Tensor]:
            precond = inverse_rms_many(_stat(ss, "exp_avg_sq"), bias_correction(self.beta2, k), self.eps)
            torch._foreach_mul_(precond, torch._foreach_div(_stat(ss, "exp_avg"), bias_correction(self.beta1, k)))
            return precond
        return per_bucket(bucket, grads, states)


class SgdDirections(Directions):
    """SGD: search d = g, slope ‖g‖² ; step d = m̂ with m = β1·m + (1−β1)·g (d = g when β1 = 0)."""

    def __init__(self, betas: Sequence[float], eps: float) -> None:
        self.beta1 = betas[0]

    def init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        if self.beta1 > 0.0:
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def update(self, state: dict[str, Any], g: Tensor) -> None:
        if self.beta1 > 0.0:
            ema_(state["exp_avg"], g, self.beta1, order="salsa")

    def update_many(self, states: list[dict[str, Any]], grads: list[Tensor]) -> None:
        if self.beta1 > 0.0:
            per_bucket(lambda gs, ss: ema_many_(_stat(ss, "exp_avg"), gs, self.beta1, order="salsa"), grads, states)

    def search(self, state: dict[str, Any], g: Tensor, k: int) -> tuple[Tensor, Tensor]:
        return g.clone(), g.square().sum()

    def step(self, state: dict[str, Any], g: Tensor, k: int) -> Tensor:
        if self.beta1 == 0.0:
            return g.clone()
        return state["exp_avg"] / bias_correction(self.beta1, k)

    def step_many(self, states: list[dict[str, Any]], grads: list[Tensor], k: int) -> list[Tensor]:
        if self.beta1 == 0.0:
            return [g.clone() for g in grads]
        correction = bias_correction(self.beta1, k)
        return per_bucket(lambda gs, ss: torch._foreach_div(_stat(ss, "exp_avg"), correction), grads, states)


class SignDirections(Directions):
    """Sign (signSGD / Lion-like): search d = sign(g), slope ‖g‖₁ ; step d = sign(m), m = β1·m + (1−β1)·g."""

    def __init__(self, betas: Sequence[float], eps: float) -> None:
        self.beta1 = betas[0]

    def init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def update(self, state: dict[str, Any], g: Tensor) -> None:
        ema_(state["exp_avg"], g, self.beta1, order="salsa")

    def update_many(self, states: list[dict[str, Any]], grads: list[Tensor]) -> None:
        per_bucket(lambda gs, ss: ema_many_(_stat(ss, "exp_avg"), gs, self.beta1, order="salsa"), grads, states)

    def search(self, state: dict[str, Any], g: Tensor, k: int) -> tuple[Tensor, Tensor]:
        return g.sign(), g.abs().sum()

    def step(self, state: dict[str, Any], g: Tensor, k: int) -> Tensor:
        return state["exp_avg"].sign()

    def step_many(self, states: list[dict[str, Any]], grads: list[Tensor], k: int) -> list[Tensor]:
        return per_bucket(lambda gs, ss: torch._foreach_sign(_stat(ss, "exp_avg")), grads, states)


class MuonDirections(Directions):
    """Muon for matrices, Adam for the rest (as the Muon optimizer): a parameter is a matrix when its group says
    ``use_muon=True`` (``hidden_matrices: true`` in a config) or, without the key, when it is 2-D.

    Matrices: B ← lerp(B, g, 1 − μ) with μ = betas[0]; search d = r·NS(g), slope ⟨g, d⟩; step d = r·NS(lerp(g, B, μ))
    (Nesterov), NS the bfloat16 Newton–Schulz iteration of ``muon.orthogonalize`` and r = 0.2·√max(rows, cols)
    (``match_rms_adamw``: the matrices' directions get the RMS of the Adam directions they share η with).
    Other parameters: :class:`AdamDirections`.
    """

    def __init__(self, betas: Sequence[float], eps: float) -> None:
        self.momentum = betas[0]
        self.adam = AdamDirections(betas, eps)

    def init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        if group.get("use_muon", p.ndim == 2):
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        else:
            self.adam.init_state(p, state, group)

    def update(self, state: dict[str, Any], g: Tensor) -> None:
        if "momentum_buffer" in state:
            ema_(state["momentum_buffer"], g, self.momentum)
        else:
            self.adam.update(state, g)

    def update_many(self, states: list[dict[str, Any]], grads: list[Tensor]) -> None:
        matrices = [i for i, st in enumerate(states) if "momentum_buffer" in st]
        others = [i for i, st in enumerate(states) if "momentum_buffer" not in st]
        per_bucket(lambda gs, ss: ema_many_(_stat(ss, "momentum_buffer"), gs, self.momentum),
                   [grads[i] for i in matrices], [states[i] for i in matrices])
        self.adam.update_many([states[i] for i in others], [grads[i] for i in others])

    @staticmethod
    def _scaled(x: Tensor) -> Tensor:
        return orthogonalize(x).to(x.dtype).mul_(ADJUST_LR["match_rms_adamw"](*x.shape))

    def search(self, state: dict[str, Any], g: Tensor, k: int) -> tuple[Tensor, Tensor]:
        if "momentum_buffer" not in state:
            return self.adam.search(state, g, k)
        d = self._scaled(g)
        return d, (g * d).sum()

    def step(self, state: dict[str, Any], g: Tensor, k: int) -> Tensor:
        if "momentum_buffer" not in state:
            return self.adam.step(state, g, k)
        return self._scaled(g.lerp(state["momentum_buffer"], self.momentum))

    def step_many(self, states: list[dict[str, Any]], grads: list[Tensor], k: int) -> list[Tensor]:
        others = [i for i, st in enumerate(states) if "momentum_buffer" not in st]
        out = [None if "momentum_buffer" not in st else self.step(st, g, k) for st, g in zip(states, grads)]
        for i, d in zip(others, self.adam.step_many([states[i] for i in others], [grads[i] for i in others], k)):
            out[i] = d
        return out


DIRECTIONS: dict[str, type] = {"adam": AdamDirections, "sgd": SgdDirections, "sign": SignDirections,
                               "muon": MuonDirections}
