"""How the training loop drives an optimizer. An optimizer opts into a protocol by what it defines.

* plain: ``step()`` after ``loss.backward()`` — every torch optimizer;
* closure: ``requires_closure = True`` — ``step(closure)`` evaluates the loss itself, several times per step
  (line search). The closure is SaLSA upstream's ``closure(backwards: bool = True)``: every call sees the SAME batch —
  the rank's whole batch, all its micro-batches — and the SAME random state (dropout), restored from a snapshot
  taken before the first call. The loop computes the first (backward) evaluation before ``step`` and the closure
  hands it over, so a non-finite loss or gradient can skip the step before the optimizer touches anything;
* modes: ``train()`` / ``eval()`` methods (Schedule-Free) — evaluation and checkpoints happen in eval mode, at x.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.optim import Optimizer

from research_optim import rng

BatchLossFn = Callable[[bool], torch.Tensor]  # backward → the batch's detached mean loss (+ its gradient): BatchLoss


def requires_closure(optimizer: Optimizer) -> bool:
    return bool(getattr(optimizer, "requires_closure", False))


def has_modes(optimizer: Optimizer) -> bool:
    return callable(getattr(optimizer, "train", None)) and callable(getattr(optimizer, "eval", None))


def diagnostics(optimizer: Optimizer) -> dict[str, float]:
    """The optimizer's own numbers (masked fraction, step size, ...) — read only when the loop logs."""
    fn = getattr(optimizer, "diagnostics", None)
    return {f"opt/{k}": float(v) for k, v in fn().items()} if callable(fn) else {}


def _clip(params: list[torch.Tensor], max_norm: float | None, need_norm: bool = False) -> torch.Tensor | None:
    """Clip the gradients to ``max_norm`` (None: no clipping); returns their global norm when computed."""
    if max_norm is not None:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    if need_norm:
        return torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    return None


class NonFiniteUpdate(RuntimeError):
    """A step whose loss and gradient were finite left non-finite parameters or optimizer state (it overflowed)."""


def _finite_on_every_rank(loss: torch.Tensor, grad_norm: torch.Tensor | None) -> bool:
    """Whether the loss and the gradient norm are finite on every rank (one collective, one host sync)."""
    values = loss.detach().float().reshape(1)
    if grad_norm is not None:
        values = torch.cat([values, grad_norm.detach().float().reshape(1).to(values.device)])
    finite = torch.isfinite(values).all().to(torch.int32)
    if dist.is_initialized():
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return bool(finite.item())


def state_is_finite(optimizer: Optimizer, params: list[torch.Tensor]) -> bool:
    """Whether the parameters, every floating-point tensor of the optimizer state and every lr are finite.

    One fused pass (max-abs per tensor, then one reduction): +inf/-inf and NaN all surface in the maxima.
    """
    tensors = [p.detach() for p in params]
    for state in optimizer.state.values():
        tensors += [v for v in state.values() if isinstance(v, torch.Tensor) and v.is_floating_point()]
    lrs = [float(group["lr"]) for group in optimizer.param_groups if "lr" in group]
    if not all(math.isfinite(lr) for lr in lrs):
        return False
    if not tensors:
        return True
    device = tensors[0].device
    maxima = torch._foreach_norm(tensors, math.inf)
    return bool(torch.stack([m.to(device, torch.float32) for m in maxima]).isfinite().all())


def optimizer_step(optimizer: Optimizer, batch_loss: BatchLossFn, params: list[torch.Tensor],
                   grad_clip: float | None, skip_nonfinite: bool = False) -> tuple[torch.Tensor, bool]:
    """One optimizer step on one batch; returns the (detached) loss at the starting point and whether it was skipped.

    ``batch_loss(backward)`` evaluates the rank's batch (a :class:`~research_optim.batch_loss.BatchLoss`: over its
    micro-batches), accumulating the gradient when ``backward``.

    The loss and its gradient come first, for every protocol: a closure optimizer's first, backward evaluation
    returns them instead of computing them again (same numbers, same RNG stream). So with ``skip_nonfinite`` a
    non-finite loss or gradient norm — on any rank — skips the step before the optimizer is called at all: nothing
    in it changes. A step that was taken and still left non-finite parameters or state (an overflowing update)
    raises :class:`NonFiniteUpdate`; the caller stops the run, which is never checkpointed in that state.
    """
    closure_rng = rng.snapshot() if requires_closure(optimizer) else None
    optimizer.zero_grad(set_to_none=True)
    loss = batch_loss(True)
    grad_norm = _clip(params, grad_clip, need_norm=skip_nonfinite)
    if skip_nonfinite and not _finite_on_every_rank(loss, grad_norm):
        optimizer.zero_grad(set_to_none=True)
        return loss, True
    if closure_rng is None:
        optimizer.step()
    else:
        optimizer.step(_closure(optimizer, batch_loss, params, grad_clip, closure_rng, first=loss))
    if skip_nonfinite and not state_is_finite(optimizer, params):
        raise NonFiniteUpdate("the step's loss and gradient were finite, but the update left non-finite parameters "
                              "or optimizer state (it overflowed)")
    return loss, False


def _closure(optimizer: Optimizer, batch_loss: BatchLossFn, params: list[torch.Tensor], grad_clip: float | None,
             generators: dict[str, Any], first: torch.Tensor) -> Callable[..., torch.Tensor]:
    """SaLSA upstream's ``closure(backwards=True)``: every evaluation sees the batch and random state of the first one.

    The first backward evaluation was already done by the caller (loss ``first``, gradients in place, generators
    where that forward left them); the closure hands it over once, then evaluates anew.
    """
    pending = [first]

    def closure(backwards: bool = True) -> torch.Tensor:
        if backwards and pending:
            return pending.pop()
        rng.restore(generators)
        if not backwards:
            return batch_loss(False)
        optimizer.zero_grad(set_to_none=True)
        loss = batch_loss(True)
        _clip(params, grad_clip)
        return loss

    return closure


@contextmanager
def evaluation_mode(optimizer: Optimizer) -> Iterator[None]:
    """Parameters at the evaluation point for the duration (x for Schedule-Free; a no-op otherwise)."""
    if not has_modes(optimizer):
        yield
        return
    optimizer.eval()
    try:
        yield
    finally:
        optimizer.train()


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def recompute_batch_norm(model: nn.Module, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], n: int,
                         forward: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Recompute BatchNorm running statistics at the current parameters (x, in eval mode of Schedule-Free).

    Statistics gathered during training were computed at y; evaluation happens at x. Reset them and take the
    exact average over ``n`` training batches (momentum=None), then restore each layer's momentum.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    was_training = model.training
    model.train()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    for _, (x, _y) in zip(range(n), batches):
        forward(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)
