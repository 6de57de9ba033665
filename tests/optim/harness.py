"""Step two optimizers side by side on identical parameters and identical gradients.

Used by every reference-equality test: ``ours`` and ``ref`` start from the same tensors, receive the same
(seeded) gradients for ``steps`` steps, and the parameters are compared after each step.
"""
from __future__ import annotations

from typing import Callable, Sequence

import pytest
import torch
from torch.optim import Optimizer

SHAPES: tuple[tuple[int, ...], ...] = ((7,), (5, 3), (4, 3, 2, 2), (1,), (16, 8))

F32 = dict(dtype=torch.float32, rtol=1e-6, atol=1e-7)  # compiled vs reference: rounding only
EXACT = dict(dtype=torch.float32, rtol=0.0, atol=0.0)  # foreach vs reference: the same ops, bit for bit
# (implementation, tolerance) of the fast paths against the reference. Compiling costs seconds per case, so the
# compiled cases belong to the full suite only (`slow`); the fast tier keeps the bit-exact foreach ones.
FAST_PATHS = [pytest.param("compiled", F32, marks=pytest.mark.slow), ("foreach", EXACT)]

MakeOptimizer = Callable[[list[torch.nn.Parameter]], Optimizer]


def make_params(shapes: Sequence[tuple[int, ...]] = SHAPES, seed: int = 0, dtype=torch.float64) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]


def run_side_by_side(
    make_ours: MakeOptimizer,
    make_ref: MakeOptimizer,
    steps: int = 120,
    shapes: Sequence[tuple[int, ...]] = SHAPES,
    dtype=torch.float64,
    seed: int = 0,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    grad_fn: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    between_steps: Callable[[int, Optimizer, Optimizer], None] | None = None,
) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """Run both optimizers for ``steps`` steps and assert the parameters agree after every step.

    ``grad_fn(p, gen)`` makes the gradient from the current parameter (default: p + noise, a noisy quadratic,
    so the trajectory depends on the parameters and a divergence compounds instead of hiding).
    ``between_steps(t, ours, ref)`` runs after step t (e.g. to switch train/eval modes on both).
    """
    init = make_params(shapes, seed, dtype)
    ours_p = [torch.nn.Parameter(t.clone()) for t in init]
    ref_p = [torch.nn.Parameter(t.clone()) for t in init]
    ours, ref = make_ours(ours_p), make_ref(ref_p)
    gen = torch.Generator().manual_seed(seed + 1)
    grad_fn = grad_fn or (lambda p, g: p.detach() + 0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    for t in range(1, steps + 1):
        state = gen.get_state()
        for p in ours_p:
            p.grad = grad_fn(p, gen)
        gen.set_state(state)
        for p in ref_p:
            p.grad = grad_fn(p, gen)
        ours.step()
        ref.step()
        for i, (a, b) in enumerate(zip(ours_p, ref_p)):
            torch.testing.assert_close(a.detach(), b.detach(), rtol=rtol, atol=atol,
                                       msg=lambda m, i=i, t=t: f"tensor {i} differs after step {t}: {m}")
        if between_steps is not None:
            between_steps(t, ours, ref)
    return ours_p, ref_p


def masked_fraction_log():
    """(log, hook): a ``between_steps`` hook recording our optimizer's masked fraction after every step."""
    log: list[float] = []

    def hook(t, ours, ref):
        log.append(ours.diagnostics()["masked_fraction"])

    return log, hook
