"""How the training loop drives an optimizer. An optimizer opts into a protocol by what it defines.

* plain: ``step()`` after ``loss.backward()`` — every torch optimizer;
* closure: ``requires_closure = True`` — ``step(closure)`` evaluates the loss itself, several times per step
  (line search). The closure is the seed's ``closure(backwards: bool = True)``: every call sees the SAME batch and
  the SAME random state (dropout), restored from a snapshot taken before the first call;
* modes: ``train()`` / ``eval()`` methods (Schedule-Free) — evaluation and checkpoints happen in eval mode, at x.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn
from torch.optim import Optimizer

LossFn = Callable[[], torch.Tensor]


def requires_closure(optimizer: Optimizer) -> bool:
    return bool(getattr(optimizer, "requires_closure", False))


def has_modes(optimizer: Optimizer) -> bool:
    return callable(getattr(optimizer, "train", None)) and callable(getattr(optimizer, "eval", None))


def diagnostics(optimizer: Optimizer) -> dict[str, float]:
    """The optimizer's own numbers (masked fraction, step size, ...) — read only when the loop logs."""
    fn = getattr(optimizer, "diagnostics", None)
    return {f"opt/{k}": float(v) for k, v in fn().items()} if callable(fn) else {}


def _clip(params: list[torch.Tensor], max_norm: float | None) -> None:
    if max_norm is not None:
        torch.nn.utils.clip_grad_norm_(params, max_norm)


def _rng_snapshot() -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    return torch.get_rng_state(), (torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)


def _rng_restore(snapshot: tuple[torch.Tensor, list[torch.Tensor] | None]) -> None:
    torch.set_rng_state(snapshot[0])
    if snapshot[1] is not None:
        torch.cuda.set_rng_state_all(snapshot[1])


def optimizer_step(optimizer: Optimizer, compute_loss: LossFn, params: list[torch.Tensor],
                   grad_clip: float | None, skip_nonfinite: bool = False) -> torch.Tensor:
    """One optimizer step on one batch; returns the (detached) loss at the starting point."""
    if requires_closure(optimizer):
        snapshot = _rng_snapshot()

        def closure(backwards: bool = True) -> torch.Tensor:
            _rng_restore(snapshot)
            if not backwards:
                with torch.no_grad():
                    return compute_loss()
            optimizer.zero_grad(set_to_none=True)
            loss = compute_loss()
            loss.backward()
            _clip(params, grad_clip)
            return loss.detach()

        return torch.as_tensor(optimizer.step(closure)).detach()

    optimizer.zero_grad(set_to_none=True)
    loss = compute_loss()
    loss.backward()
    if skip_nonfinite and not torch.isfinite(loss):
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()
    _clip(params, grad_clip)
    optimizer.step()
    return loss.detach()


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
