"""Schedule-Free AdamW and SGD, memory-efficient versions (Defazio et al. 2024, arXiv 2405.15682).

State per parameter: z (and v for AdamW) — the same memory as the base optimizer. The parameter holds y during
training and x during evaluation; the paper's three sequences are::

    z_{t+1} = z_t − γ_t · d_t                              d_t: the base direction at y_t, plus λ·y_t
    x_{t+1} = (1 − c_{t+1}) · x_t + c_{t+1} · z_{t+1}      c_{t+1} = w_{t+1} / Σ_{i≤t+1} w_i
    y_{t+1} = (1 − β) · z_{t+1} + β · x_{t+1}

    AdamW:  v = β2·v + (1 − β2)·g² ;  d = g / (√(v / (1 − β2^t)) + eps) + λ·y        (no first moment: β1 is β)
    SGD:    d = g + λ·y                                                            (β is ``momentum``)

with the warmup and averaging weights of :mod:`research_optim.optim.schedule_free_core`. Weight decay is taken
at y, as in the ``schedulefree`` package. Verified against ``schedulefree.AdamWScheduleFree`` and
``SGDScheduleFree`` (1.4.1) and against the explicit-x/y/z twins in ``schedule_free_reference``.

Usage: ``optimizer.train()`` before training, ``optimizer.eval()`` before evaluation and checkpoints. Like the
package, a new optimizer is in eval mode and ``step()`` raises ``RuntimeError`` until ``train()`` is called.
BatchNorm running statistics are computed at y; the training loop recomputes them at x before evaluating.

Cautious (``cautious=<φ name>``): the z-update direction u (Adam-preconditioned g, or g) is masked by
``cautious_direction(u, g)`` before the decay λ·y is added (decay is never masked). Note that for both bases u has
the sign of g coordinate-wise, so the mask only removes coordinates where g = 0 (and rescales for the φ variants
that rescale); ``masked_fraction`` reports this.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from research_optim.optim.cautious import cautious_direction
from research_optim.optim.implementation import (
    COMPILE_FAILED, buckets, call_compiled, check_implementation, scalar, use_compiled,
)
from research_optim.optim.schedule_free_core import (
    OwnDirectionScheduleFree,
    averaging_step,
    check_non_negative,
    check_open_unit_interval,
    fast_step_,
    params_with_state,
    x_to_y_,
    y_to_x_,
    z_based_x_minus_y,
)

__all__ = ["AdamWScheduleFree", "SGDScheduleFree", "AdamWRule", "SGDRule"]


def _set_implementation(optimizer: Any, implementation: str) -> None:
    check_implementation(implementation, type(optimizer).__name__)
    optimizer.implementation = implementation  # an attribute, not a group option: state_dicts stay identical


class AdamWRule:
    """Hyperparameters and state of the Schedule-Free AdamW rule, shared by the fast and reference versions.

    Args:
        params: parameters or param-group dicts.
        lr: peak learning rate (> 0); default 0.0025.
        betas: (β, β2): β ∈ (0, 1) interpolates y between z and x; β2 ∈ [0, 1) for the second moment.
        eps: added to √v̂ (≥ 0).
        weight_decay: λ ≥ 0, decay computed at y.
        warmup_steps: linear warmup length (integer ≥ 0); lr_t = lr·min(1, t/warmup_steps).
        r: polynomial weighting of the average, w_t ∝ t^r (≥ 0).
        weight_lr_power: w_t ∝ lr_max^weight_lr_power (≥ 0; 0 disables lr weighting).
        cautious: φ name for cautious masking of the z direction, or None.
        cautious_factor: weight of misaligned coordinates for φ = ``soft`` (in [0, 1]).
        implementation: ``"auto"`` | ``"reference"`` | ``"compiled"`` for the memory-efficient version (its eager
            foreach step is the reference; see ``research_optim.optim.implementation``); the explicit-x/y/z
            twins of ``schedule_free_reference`` have a single implementation and ignore it.
    """

    def __init__(self, params: Any, lr: float = 0.0025, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, warmup_steps: int = 0, r: float = 0.0,
                 weight_lr_power: float = 2.0, cautious: str | None = None, cautious_factor: float = 0.0,
                 implementation: str = "auto") -> None:
        _set_implementation(self, implementation)
        if len(betas) != 2:
            raise ValueError(f"{type(self).__name__}: betas must have 2 entries, got {betas}")
        defaults = dict(lr=lr, betas=tuple(float(b) for b in betas), eps=eps, weight_decay=weight_decay,
                        warmup_steps=warmup_steps, r=r, weight_lr_power=weight_lr_power, cautious=cautious,
                        cautious_factor=cautious_factor)
        super().__init__(params, defaults)  # type: ignore[call-arg]

    def _validate_group(self, group: dict[str, Any]) -> None:
        owner = type(self).__name__
        beta1, beta2 = group["betas"]
        check_open_unit_interval("betas[0]", beta1, owner)
        if not 0.0 <= beta2 < 1.0:
            raise ValueError(f"{owner}: betas[1] must be in [0, 1), got {beta2}")
        check_non_negative("eps", group["eps"], owner)

    def _beta(self, group: dict[str, Any]) -> float:
        return group["betas"][0]

    def _init_state(self, p: Tensor, state: dict[str, Any]) -> None:
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)


class SGDRule:
    """Hyperparameters of the Schedule-Free SGD rule, shared by the fast and reference versions.

    Args:
        params: parameters or param-group dicts.
        lr: peak learning rate (> 0); default 1.0.
        momentum: β ∈ (0, 1), interpolation of y between z and x; default 0.9.
        weight_decay, warmup_steps, r, weight_lr_power, cautious, cautious_factor, implementation: as in
            ``AdamWRule``.
    """

    def __init__(self, params: Any, lr: float = 1.0, momentum: float = 0.9, weight_decay: float = 0.0,
                 warmup_steps: int = 0, r: float = 0.0, weight_lr_power: float = 2.0, cautious: str | None = None,
                 cautious_factor: float = 0.0, implementation: str = "auto") -> None:
        _set_implementation(self, implementation)
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, warmup_steps=warmup_steps, r=r,
                        weight_lr_power=weight_lr_power, cautious=cautious, cautious_factor=cautious_factor)
        super().__init__(params, defaults)  # type: ignore[call-arg]

    def _validate_group(self, group: dict[str, Any]) -> None:
        check_open_unit_interval("momentum", group["momentum"], type(self).__name__)

    def _beta(self, group: dict[str, Any]) -> float:
        return group["momentum"]

    def _init_state(self, p: Tensor, state: dict[str, Any]) -> None:
        """SGD keeps nothing beyond the Schedule-Free iterates."""


class _FastScheduleFree(OwnDirectionScheduleFree):
    """y in p, z in state; a subclass supplies the base directions of a list of gradients.

    ``implementation``: ``"reference"`` is the eager ``torch._foreach_*`` step below, ``"compiled"`` the
    same step compiled (``fused_schedule_free``), ``"auto"`` picks (see ``research_optim.optim.implementation``).
    """

    _adam = False  # whether the compiled step keeps the second moment (static argument of the compiled function)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("implementation", "auto")

    def _init_state(self, p: Tensor, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def _directions(self, grads: list[Tensor], states: list[dict[str, Any]], group: dict[str, Any],
                    t: int) -> list[Tensor]:
        """The base directions u (without decay); may return ``grads`` itself, which is then only read."""
        raise NotImplementedError

    def _to_eval_(self, group: dict[str, Any]) -> None:
        y_to_x_(*params_with_state(group, self.state, "z"), self._beta(group))

    def _to_train_(self, group: dict[str, Any]) -> None:
        x_to_y_(*params_with_state(group, self.state, "z"), self._beta(group))

    def _x_minus_y(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> Tensor | None:
        return z_based_x_minus_y(p, state.get("z"), self._beta(group), bool(group["train_mode"]))

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = self._begin_step(closure)
        for group in self.param_groups:
            avg = averaging_step(group, group["lr"], group["warmup_steps"], group["r"], group["weight_lr_power"])
            ys = [p for p in group["params"] if p.grad is not None]
            if not ys:
                continue
            for p in ys:
                if p.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                state = self.state[p]
                if "z" not in state:  # first step: x = y = z = p
                    state["z"] = p.detach().clone(memory_format=torch.preserve_format)
                    self._init_state(p, state)
            if use_compiled(self.implementation, sum(p.numel() for p in ys)):
                ys = self._compiled_group_step(group, ys, avg.t, avg.lr, avg.c)  # left if the compiler failed
                if not ys:
                    continue
            grads = [p.grad for p in ys]
            states = [self.state[p] for p in ys]
            directions = self._directions(grads, states, group, avg.t)
            if group["cautious"] is not None:
                directions = [cautious_direction(u, g, group["cautious"], group["cautious_factor"], self._masked)
                              for u, g in zip(directions, grads)]
            if group["weight_decay"] != 0.0:
                # decay at y, never masked; a new list, so p.grad is left as the caller computed it
                directions = torch._foreach_add(directions, ys, alpha=group["weight_decay"])
            fast_step_(ys, [s["z"] for s in states], directions, avg.lr, avg.c, self._beta(group))
        return loss

    def _compiled_group_step(self, group: dict[str, Any], ys: list[Tensor], t: int, lr: float,
                             c: float) -> list[Tensor]:
        """Step ``ys`` bucket by bucket, compiled; returns the parameters left for the foreach path (none, unless
        compilation failed)."""
        from research_optim.optim.fused_schedule_free import schedule_free_step

        beta2, eps = (group["betas"][1], group["eps"]) if self._adam else (0.0, 0.0)
        scalars = [scalar(v) for v in (lr, c, self._beta(group), group["weight_decay"], beta2, 1.0 - beta2**t, eps)]
        left = list(ys)
        for bucket in buckets([((p.device, p.dtype), p) for p in ys]).values():
            states = [self.state[p] for p in bucket]
            masked = call_compiled(
                schedule_free_step, bucket, [s["z"] for s in states], [p.grad for p in bucket],
                [s["exp_avg_sq"] for s in states] if self._adam else [], *scalars, self._adam, group["cautious"],
                float(group["cautious_factor"]))
            if masked is COMPILE_FAILED:
                return left
            if masked is not None:
                self._masked.add_count(masked, sum(p.numel() for p in bucket))
            done = {id(p) for p in bucket}
            left = [p for p in left if id(p) not in done]
        return left


class AdamWScheduleFree(AdamWRule, _FastScheduleFree):
    """Schedule-Free AdamW, memory-efficient: state z and v; β = betas[0]. Arguments: see ``AdamWRule``."""

    _adam = True

    def _directions(self, grads: list[Tensor], states: list[dict[str, Any]], group: dict[str, Any],
                    t: int) -> list[Tensor]:
        beta2 = group["betas"][1]
        exp_avg_sq = [s["exp_avg_sq"] for s in states]
        torch._foreach_mul_(exp_avg_sq, beta2)
        torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1.0 - beta2)
        denom = torch._foreach_div(exp_avg_sq, 1.0 - beta2**t)
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, group["eps"])
        return torch._foreach_div(grads, denom)


class SGDScheduleFree(SGDRule, _FastScheduleFree):
    """Schedule-Free SGD, memory-efficient: state z only; β = ``momentum``. Arguments: see ``SGDRule``."""

    def _directions(self, grads: list[Tensor], states: list[dict[str, Any]], group: dict[str, Any],
                    t: int) -> list[Tensor]:
        return grads
