"""The loss of a rank's batch, evaluated micro-batch by micro-batch (``train.micro_batch_size``).

A step's batch is one ``BatchLoss``: calling it returns the mean loss over the rank's examples and, with
``backward=True``, accumulates its gradient — the gradient of that mean — into ``.grad``. With k equal
micro-batches each micro-batch's loss is scaled by 1/k before its backward, so k micro-batches give the gradient of
one pass over the whole batch, up to floating-point summation order, while only one micro-batch's activations are
alive at a time. Under DDP the gradient all-reduce runs once per evaluation, with the last micro-batch's backward
(``no_sync`` on the others). Closure optimizers call it again for every line-search evaluation, forward-only ones
included: each evaluation covers the whole batch, micro-batch after micro-batch, in the same order.
"""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from research_optim.data.base import micro_slices

LossOf = Callable[[Tensor, Tensor], Tensor]


def loss_and_correct(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy (per token for LMs), computed in float32, and the number of correct predictions.
    Floating-point targets are class probabilities (Mixup/CutMix, label smoothing); a prediction is correct on
    their most likely class."""
    classes = logits.shape[-1]
    flat_logits = logits.reshape(-1, classes).float()
    soft = targets.is_floating_point()
    flat_targets = targets.reshape(-1, classes) if soft else targets.reshape(-1)
    loss = F.cross_entropy(flat_logits, flat_targets)
    return loss, (flat_logits.argmax(-1) == (flat_targets.argmax(-1) if soft else flat_targets)).sum()


class BatchLoss:
    """``batch_loss(backward)`` → the detached mean loss over the batch ``(x, y)``; see the module docstring.

    ``loss_of(x, y)`` is the mean loss of a micro-batch (with its graph); ``no_sync`` is DDP's context manager
    that holds back the gradient all-reduce (None without DDP).
    """

    def __init__(self, loss_of: LossOf, x: Tensor, y: Tensor, micro_batch_size: int | None = None,
                 no_sync: Callable[[], AbstractContextManager] | None = None) -> None:
        self.loss_of, self.no_sync = loss_of, no_sync
        self.parts = [(x[part], y[part]) for part in micro_slices(len(x), micro_batch_size)]

    def __call__(self, backward: bool = True) -> Tensor:
        if not backward:
            with torch.no_grad():
                return torch.stack([self.loss_of(x, y).detach() for x, y in self.parts]).mean()
        if len(self.parts) == 1:  # the whole batch at once: exactly one forward and one backward
            loss = self.loss_of(*self.parts[0])
            loss.backward()
            return loss.detach()
        last, losses = len(self.parts) - 1, []
        for i, (x, y) in enumerate(self.parts):
            with self.no_sync() if self.no_sync is not None and i < last else nullcontext():
                loss = self.loss_of(x, y)
                (loss / len(self.parts)).backward()
            losses.append(loss.detach())
        return torch.stack(losses).mean()
