"""The multi-tensor Schedule-Free AdamW / SGD step, made to be ``torch.compile``d.

Same arithmetic as ``schedule_free._FastScheduleFree.step`` (its eager ``torch._foreach_*`` path, the reference
here): base direction u (Adam-preconditioned g, or g), the cautious mask, decay at y, then ``fast_step_``'s
y' = lerp(y, z, c) + lr·(β·(1 − c) − 1)·d and z' = z − lr·d. Compiled, each tensor's update is one pass over
memory instead of one pass per foreach op. Hyperparameters are 0-dim tensors (no recompilation when lr or c
change); the decay is always applied (u + 0·y = u exactly when λ = 0, as the reference's skipped branch).
"""
from __future__ import annotations

import torch
from torch import Tensor

from research_optim.optim.fused_direction import cautious_masked

__all__ = ["schedule_free_step"]


def schedule_free_step(ys: list[Tensor], zs: list[Tensor], grads: list[Tensor], exp_avg_sqs: list[Tensor],
                       lr: Tensor, c: Tensor, beta: Tensor, weight_decay: Tensor, beta2: Tensor,
                       bias_correction2: Tensor, eps: Tensor, adam: bool, phi: str | None,
                       cautious_factor: float) -> Tensor | None:
    """One step of one bucket; ``exp_avg_sqs`` is empty (and β2, eps unused) when ``adam`` is False."""
    masked: list[Tensor] = []
    for i, (y, z, g) in enumerate(zip(ys, zs, grads)):
        u = g
        if adam:
            v = exp_avg_sqs[i]
            v.mul_(beta2).add_(g * g * (1.0 - beta2))
            u = g / (v / bias_correction2).sqrt().add_(eps)
        if phi is not None:
            u, count = cautious_masked(u, g, phi, cautious_factor, sign_of=g)  # u = g·(positive), or g
            masked.append(count)
        d = u + y * weight_decay
        y.lerp_(z, c)
        y.add_(d * (lr * (beta * (1.0 - c) - 1.0)))
        z.sub_(d * lr)
    return torch.stack(masked).sum() if masked else None
