"""Schedule-Free AdamW and SGD, reference versions with explicit x, y and z (Defazio et al. 2024).

The readable twin of :mod:`research_optim.optim.schedule_free`: per tensor, it stores all three sequences and
applies the paper's updates literally::

    z ← z − γ_t · (u + λ·y)        u = g / (√(v/(1 − β2^t)) + eps) (AdamW) or g (SGD); decay at y, never masked
    x ← lerp(x, z, c_t)
    y ← lerp(x, z, 1 − β)          (= β·x + (1 − β)·z)
    p ← y                          (x in p while in eval mode)

It costs two extra buffers per parameter and exists to prove the fast versions (same trajectory, tested) and as
the base for modifications. Verified against ``schedulefree.AdamWScheduleFreeReference`` and
``SGDScheduleFreeReference`` (1.4.1). Unlike the package's ``SGDScheduleFreeReference``, which starts in train
mode, every optimizer here starts in eval mode (as the package's other classes do): call ``train()`` first.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from research_optim.optim.cautious import cautious_direction
from research_optim.optim.schedule_free import AdamWRule, SGDRule
from research_optim.optim.schedule_free_core import OwnDirectionScheduleFree, averaging_step

__all__ = ["AdamWScheduleFreeReference", "SGDScheduleFreeReference", "adam_preconditioned"]


def adam_preconditioned(grad: Tensor, exp_avg_sq: Tensor, t: int, beta2: float, eps: float) -> Tensor:
    """v ← β2·v + (1 − β2)·g² in place; return g / (√(v / (1 − β2^t)) + eps) as a new tensor."""
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
    return grad / (exp_avg_sq / (1.0 - beta2**t)).sqrt_().add_(eps)


class _ReferenceScheduleFree(OwnDirectionScheduleFree):
    """x, y, z in state; a subclass supplies the per-tensor base direction u."""

    def _init_state(self, p: Tensor, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def _direction(self, grad: Tensor, state: dict[str, Any], group: dict[str, Any], t: int) -> Tensor:
        raise NotImplementedError

    def _to_eval_(self, group: dict[str, Any]) -> None:
        for p in group["params"]:
            if "x" in self.state.get(p, {}):
                p.copy_(self.state[p]["x"])

    def _to_train_(self, group: dict[str, Any]) -> None:
        for p in group["params"]:
            if "y" in self.state.get(p, {}):
                p.copy_(self.state[p]["y"])

    def _x_minus_y(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> Tensor | None:
        return state["x"] - state["y"] if "x" in state else None

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = self._begin_step(closure)
        for group in self.param_groups:
            avg = averaging_step(group, group["lr"], group["warmup_steps"], group["r"], group["weight_lr_power"])
            beta = self._beta(group)
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                state = self.state[p]
                if "z" not in state:
                    for key in ("x", "y", "z"):
                        state[key] = p.detach().clone(memory_format=torch.preserve_format)
                    self._init_state(p, state)
                x, y, z = state["x"], state["y"], state["z"]
                u = self._direction(grad, state, group, avg.t)
                u = cautious_direction(u, grad, group["cautious"], group["cautious_factor"], self._masked)
                if group["weight_decay"] != 0.0:
                    u = u + group["weight_decay"] * y
                z.sub_(u, alpha=avg.lr)
                x.lerp_(z, avg.c)
                y.copy_(torch.lerp(x, z, 1.0 - beta))
                p.copy_(y)
        return loss


class AdamWScheduleFreeReference(AdamWRule, _ReferenceScheduleFree):
    """Schedule-Free AdamW with explicit x, y, z (state x, y, z, v). Arguments: see ``AdamWRule``."""

    def _direction(self, grad: Tensor, state: dict[str, Any], group: dict[str, Any], t: int) -> Tensor:
        return adam_preconditioned(grad, state["exp_avg_sq"], t, group["betas"][1], group["eps"])


class SGDScheduleFreeReference(SGDRule, _ReferenceScheduleFree):
    """Schedule-Free SGD with explicit x, y, z (state x, y, z). Arguments: see ``SGDRule``."""

    def _direction(self, grad: Tensor, state: dict[str, Any], group: dict[str, Any], t: int) -> Tensor:
        return grad
