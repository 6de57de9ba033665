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

from research_optim.optim.cautious import cautious_direction
from research_optim.optim.implementation import add
from research_optim.optim.schedule_free import AdamWArguments, SGDArguments
from research_optim.optim.schedule_free_core import ExplicitXYZ, RuleScheduleFree

__all__ = ["AdamWScheduleFreeReference", "SGDScheduleFreeReference"]


class _ReferenceScheduleFree(ExplicitXYZ, RuleScheduleFree):
    """x, y, z in state; the base direction u from ``rule``, one tensor at a time."""

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = self._begin_step(closure)
        for group in self.param_groups:
            avg = self._averaging_step(group)
            s, beta = self.rule.scalars(group, avg.t), self._beta(group)
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
                    self.rule.init_state(p, state, group)
                x, y, z = state["x"], state["y"], state["z"]
                u = self.rule.direction(y, grad, state, s)
                u = cautious_direction(u, grad, group["cautious"], group["cautious_factor"], self._masked,
                                       self.rule.sign_source(grad, state))
                if group["weight_decay"] != 0.0:
                    u = add(u, y, group["weight_decay"])
                z.sub_(u, alpha=avg.lr)
                x.lerp_(z, avg.c)
                y.copy_(torch.lerp(x, z, 1.0 - beta))
                p.copy_(y)
        return loss


class AdamWScheduleFreeReference(AdamWArguments, _ReferenceScheduleFree):
    """Schedule-Free AdamW with explicit x, y, z (state x, y, z, v). Arguments: see ``AdamWArguments``."""


class SGDScheduleFreeReference(SGDArguments, _ReferenceScheduleFree):
    """Schedule-Free SGD with explicit x, y, z (state x, y, z). Arguments: see ``SGDArguments``."""
