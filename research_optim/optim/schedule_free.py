"""Schedule-Free AdamW and SGD, memory-efficient versions (Defazio et al. 2024, arXiv 2405.15682).

State per parameter: z (and v for AdamW) — the same memory as the base optimizer. The parameter holds y during
training and x during evaluation; the paper's three sequences are::

    z_{t+1} = z_t − γ_t · d_t                              d_t: the base direction at y_t, plus λ·y_t
    x_{t+1} = (1 − c_{t+1}) · x_t + c_{t+1} · z_{t+1}      c_{t+1} = w_{t+1} / Σ_{i≤t+1} w_i
    y_{t+1} = (1 − β) · z_{t+1} + β · x_{t+1}

    AdamW:  v = β2·v + (1 − β2)·g² ;  d = g / (√(v / (1 − β2^t)) + eps) + λ·y        (no first moment: β1 is β)
            inner_momentum μ > 0 (the upstream repository, after 1.4.1): g ← m̂ = m / (1 − μ^t), m = μ·m + (1 − μ)·g
    SGD:    d = g + λ·y                                                            (β is ``momentum``)

with the warmup and averaging weights of :mod:`research_optim.optim.schedule_free_core`. Weight decay is taken
at y, as in the ``schedulefree`` package. The base directions are rules (``research_optim.optim.rule``): AdamW's is
:class:`ScheduleFreeAdamRule` — the package's arithmetic order, bit for bit —, SGD's the gradient. Verified against
``schedulefree.AdamWScheduleFree`` and ``SGDScheduleFree`` (1.4.1), ``inner_momentum`` against golden trajectories
of the upstream repository (``tests/fixtures/make_schedule_free_upstream.py``), and against the explicit-x/y/z
twins in ``schedule_free_reference``. ``AdamWScheduleFreePaper`` is the package's paper form (no bias correction
inside the root, lr_t scaled by √(1 − β2^t) instead).

``implementation`` (see ``research_optim.optim.implementation``): ``"reference"`` steps one tensor at a time,
``"foreach"`` the same arithmetic as multi-tensor ops (bit-identical on CPU), ``"compiled"`` the reference step of
one tensor ``torch.compile``d and called per tensor; the readable twin of the algorithm itself, with x, y and z
stored, is the Reference class.

Usage: ``optimizer.train()`` before training, ``optimizer.eval()`` before evaluation and checkpoints. Like the
package, a new optimizer is in eval mode and ``step()`` raises ``RuntimeError`` until ``train()`` is called.
BatchNorm running statistics are computed at y; the training loop recomputes them at x before evaluating.

Cautious (``cautious=<φ name>``): the z-update direction u is masked by ``cautious_direction(u, g)`` before the
decay λ·y is added (decay is never masked). Only AdamW with ``inner_momentum`` > 0 takes it: u = m̂/(√v̂ + eps) then
has m's signs, which disagree with g's where the gradient turned — the mask of C-AdamW, on the z step. Without
inner momentum (and for SGD) u has g's sign everywhere, so a mask would only drop coordinates where g = 0: refused
at construction, naming the fix (``Rule.cautious_refusal``).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor

from research_optim.optim import checks
from research_optim.optim.adamw import AdamRule
from research_optim.optim.cautious import cautious_direction, cautious_directions, cautious_masked
from research_optim.optim.implementation import (
    add, bucket_indices, check_implementation, compiled_each, div, graph_inputs, resolve, scalar,
)
from research_optim.optim.moments import (
    bias_correction, ema_, ema_many_, ema_square_, ema_square_many_, rms_scaled, rms_scaled_many,
)
from research_optim.optim.rule import GRADIENT, Rule
from research_optim.optim.schedule_free_core import (
    RuleScheduleFree,
    check_beta,
    params_with_state,
    schedule_free_step_,
    schedule_free_step_many_,
    x_to_y_,
    y_to_x_,
    z_based_x_minus_y,
)
from research_optim.optim.sharded import is_sharded

__all__ = ["AdamWScheduleFree", "AdamWScheduleFreePaper", "SGDScheduleFree", "ScheduleFreeAdamRule",
           "SCHEDULE_FREE_ADAM", "AdamWArguments", "SGDArguments"]


class ScheduleFreeAdamRule(AdamRule):
    """Schedule-Free AdamW's base direction, in ``schedulefree``'s arithmetic order: u = g / (√(v / (1 − β2^t)) +
    eps), no first moment (the interpolation β takes its place).

    The group's ``inner_momentum`` μ > 0 (the upstream repository's option, after 1.4.1; absent or 0: none) keeps
    m = μ·m + (1 − μ)·g and uses m̂ = m / (1 − μ^t) in g's place. ``correct_bias=False`` leaves v uncorrected
    (the paper form, whose lr carries √(1 − β2^t) instead).
    """

    buffers = ("exp_avg", "exp_avg_sq")

    def __init__(self, correct_bias: bool = True) -> None:
        super().__init__(first_moment=False, order="schedulefree")
        self.buffers = ScheduleFreeAdamRule.buffers
        self.correct_bias = correct_bias

    def check(self, owner: str, group: dict[str, Any]) -> None:
        super().check(owner, group)
        checks.unit_interval(owner, "inner_momentum", group.get("inner_momentum", 0.0))

    def init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if group.get("inner_momentum", 0.0) != 0.0:
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def scalars(self, group: dict[str, Any], step: int) -> dict[str, Any]:
        inner_momentum = group.get("inner_momentum", 0.0)
        beta2 = group["betas"][1]
        bias_correction2 = bias_correction(beta2, step) if self.correct_bias else 1.0
        return dict(beta2=beta2, eps=group["eps"], inner_momentum=inner_momentum,
                    bias_correction1=bias_correction(inner_momentum, step), bias_correction2=bias_correction2,
                    bias_correction2_sqrt=bias_correction2**0.5)

    def direction(self, p: Tensor, g: Tensor, state: dict[str, Any], s: dict[str, Any]) -> Tensor:
        ema_square_(state["exp_avg_sq"], g, s["beta2"])
        if "exp_avg" in state:
            g = div(ema_(state["exp_avg"], g, s["inner_momentum"], order="schedulefree"), s["bias_correction1"])
        return rms_scaled(g, state["exp_avg_sq"], s, self.order)

    def directions(self, ps: list[Tensor], gs: list[Tensor], states: list[dict[str, Any]],
                   s: dict[str, Any]) -> list[Tensor]:
        vs = [st["exp_avg_sq"] for st in states]
        ema_square_many_(vs, gs, s["beta2"])
        if states and "exp_avg" in states[0]:  # one group: every tensor has m, or none
            ms = [st["exp_avg"] for st in states]
            ema_many_(ms, gs, s["inner_momentum"], order="schedulefree")
            gs = torch._foreach_div(ms, s["bias_correction1"])
        return rms_scaled_many(gs, vs, s, self.order)

    def sign_source(self, g: Tensor, state: dict[str, Any]) -> Tensor | None:
        return state.get("exp_avg", g)

    def cautious_refusal(self, group: dict[str, Any]) -> str | None:
        if group.get("inner_momentum", 0.0) != 0.0:
            return None
        return ("u = g/(√v̂ + eps) has the sign of g, so the mask would only drop coordinates where g = 0; set "
                "inner_momentum > 0 (e.g. 0.9): the mask then compares m̂ with g, as C-AdamW's")


SCHEDULE_FREE_ADAM = ScheduleFreeAdamRule()


class AdamWArguments:
    """The constructor of Schedule-Free AdamW, shared by the memory-efficient class and its Reference twin.

    Args:
        params: parameters or param-group dicts.
        lr: peak learning rate (> 0); default 0.0025.
        betas: (β, β2): β ∈ (0, 1) interpolates y between z and x; β2 ∈ [0, 1) for the second moment.
        eps: added to √v̂ (≥ 0).
        weight_decay: λ ≥ 0, decay computed at y.
        warmup_steps: linear warmup length (integer ≥ 0); lr_t = lr·min(1, t/warmup_steps).
        r: polynomial weighting of the average, w_t ∝ t^r (≥ 0).
        weight_lr_power: w_t ∝ lr_max^weight_lr_power (≥ 0; 0 disables lr weighting).
        inner_momentum: μ ∈ [0, 1), an EMA of the gradient inside the Adam direction (the upstream repository's
            option, not in schedulefree 1.4.1; 0.9 recommended there); 0 (default) keeps no m.
        cautious: φ name for cautious masking of the z direction, or None.
        cautious_factor: weight of misaligned coordinates for φ = ``soft`` (in [0, 1]).
        implementation (memory-efficient class only): ``"auto"`` | ``"reference"`` | ``"foreach"`` | ``"compiled"``.
    """

    rule: Rule = SCHEDULE_FREE_ADAM

    def __init__(self, params: Any, lr: float = 0.0025, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, warmup_steps: int = 0, r: float = 0.0,
                 weight_lr_power: float = 2.0, inner_momentum: float = 0.0, cautious: str | None = None,
                 cautious_factor: float = 0.0, **implementation: str) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, warmup_steps=warmup_steps, r=r,
                        weight_lr_power=weight_lr_power, inner_momentum=inner_momentum, cautious=cautious,
                        cautious_factor=cautious_factor)
        super().__init__(params, defaults, **implementation)  # type: ignore[call-arg]

    def _beta(self, group: dict[str, Any]) -> float:
        return group["betas"][0]

    def _check_beta(self, group: dict[str, Any]) -> None:
        check_beta(type(self).__name__, "betas[0]", group["betas"][0])


class SGDArguments:
    """The constructor of Schedule-Free SGD, shared by the memory-efficient class and its Reference twin.

    Args:
        params: parameters or param-group dicts.
        lr: peak learning rate (> 0); default 1.0.
        momentum: β ∈ (0, 1), interpolation of y between z and x; default 0.9 (0 is refused: it leaves no average).
        weight_decay, warmup_steps, r, weight_lr_power, cautious, cautious_factor, implementation: as in
            ``AdamWArguments``.
    """

    rule: Rule = GRADIENT

    def __init__(self, params: Any, lr: float = 1.0, momentum: float = 0.9, weight_decay: float = 0.0,
                 warmup_steps: int = 0, r: float = 0.0, weight_lr_power: float = 2.0, cautious: str | None = None,
                 cautious_factor: float = 0.0, **implementation: str) -> None:
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, warmup_steps=warmup_steps, r=r,
                        weight_lr_power=weight_lr_power, cautious=cautious, cautious_factor=cautious_factor)
        super().__init__(params, defaults, **implementation)  # type: ignore[call-arg]

    def _beta(self, group: dict[str, Any]) -> float:
        return group["momentum"]

    def _check_beta(self, group: dict[str, Any]) -> None:
        check_beta(type(self).__name__, "momentum", group["momentum"])


def _compiled_step(y: Tensor, z: Tensor, g: Tensor, state: dict[str, Tensor], rule: Rule, s: dict[str, Any],
                   lr: Tensor, c: Tensor, beta: Tensor, weight_decay: Tensor, phi: str | None,
                   cautious_factor: float) -> Tensor | None:
    """The reference step of one tensor, written to be ``torch.compile``d (``implementation.compiled_each``: flat
    views, 0-dim tensor hyperparameters; the decay at y always applied: + 0·y is exact when λ = 0). Returns the
    masked count (None without caution)."""
    u = rule.direction(y, g, state, s)
    count = None
    if phi is not None:
        u, count = cautious_masked(u, g, phi, cautious_factor, rule.sign_source(g, state))
    schedule_free_step_(y, z, add(u, y, weight_decay), lr, c, beta)
    return count


class _FastScheduleFree(RuleScheduleFree):
    """y in p, z in state; the base direction from ``rule``."""

    paths = ("reference", "foreach", "compiled")

    def __init__(self, params: Any, defaults: dict[str, Any], implementation: str = "auto") -> None:
        check_implementation(type(self).__name__, implementation, self.paths)
        # an attribute, not a group option: state_dicts stay identical across implementations
        self.implementation = implementation
        super().__init__(params, defaults)

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "implementation": self.implementation}

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
            avg = self._averaging_step(group)
            ys = [p for p in group["params"] if p.grad is not None]
            for p in ys:
                if p.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                state = self.state[p]
                if "z" not in state:  # first step: x = y = z = p
                    state["z"] = p.detach().clone(memory_format=torch.preserve_format)
                    self.rule.init_state(p, state, group)
            path = resolve(self.implementation, self.paths, sum(p.numel() for p in ys),
                           sharded=any(is_sharded(p) for p in ys))
            bucket_step = self._reference_bucket_step if path == "reference" else self._foreach_bucket_step

            def eager(rest: list[Tensor]) -> None:
                for idx in bucket_indices(rest):
                    bucket_step(group, [rest[i] for i in idx], avg.t, avg.lr, avg.c)

            if path == "compiled":  # with the foreach path for the tensors it leaves
                self._compiled_group_step(group, ys, avg.t, avg.lr, avg.c, eager)
            else:
                eager(ys)
        return loss

    def _reference_bucket_step(self, group: dict[str, Any], ys: list[Tensor], t: int, lr: float, c: float) -> None:
        s, beta = self.rule.scalars(group, t), self._beta(group)
        for y in ys:
            state = self.state[y]
            u = self.rule.direction(y, y.grad, state, s)
            u = cautious_direction(u, y.grad, group["cautious"], group["cautious_factor"], self._masked,
                                   self.rule.sign_source(y.grad, state))
            if group["weight_decay"] != 0.0:
                u = add(u, y, group["weight_decay"])  # decay at y, never masked; a new tensor (p.grad is kept)
            schedule_free_step_(y, state["z"], u, lr, c, beta)

    def _foreach_bucket_step(self, group: dict[str, Any], ys: list[Tensor], t: int, lr: float, c: float) -> None:
        states = [self.state[y] for y in ys]
        grads = [y.grad for y in ys]
        us = self.rule.directions(ys, grads, states, self.rule.scalars(group, t))
        signs = [self.rule.sign_source(g, st) for g, st in zip(grads, states)]
        us = cautious_directions(us, grads, group["cautious"], group["cautious_factor"], self._masked, signs)
        if group["weight_decay"] != 0.0:
            us = torch._foreach_add(us, ys, alpha=group["weight_decay"])
        schedule_free_step_many_(ys, [st["z"] for st in states], us, lr, c, self._beta(group))

    def _compiled_group_step(self, group: dict[str, Any], ys: list[Tensor], t: int, lr: float, c: float,
                             eager_step: Callable[[list[Tensor]], None]) -> None:
        """Step ``ys`` one by one with the compiled step, those it leaves with ``eager_step`` (the ones it cannot
        take, see ``implementation.compilable``; all not yet stepped if compilation failed)."""
        args = (self.rule, graph_inputs(self.rule.scalars(group, t)),
                *[scalar(v) for v in (lr, c, self._beta(group), group["weight_decay"])], group["cautious"],
                float(group["cautious_factor"]))

        def tensors_of(y: Tensor) -> tuple[Any, ...]:
            state = self.state[y]
            return y, state["z"], y.grad, {key: state[key] for key in self.rule.buffers if key in state}

        min_numel = self.rule.auto_compiled_min_numel if self.implementation == "auto" else 0
        stepped, masked = compiled_each(_compiled_step, self, ys, tensors_of, lambda y: args, eager_step, min_numel)
        if masked is not None:
            self._masked.add_count(masked, sum(y.numel() for y in stepped))


class AdamWScheduleFree(AdamWArguments, _FastScheduleFree):
    """Schedule-Free AdamW, memory-efficient: state z and v; β = betas[0]. Arguments: see ``AdamWArguments``."""


class AdamWScheduleFreePaper(AdamWScheduleFree):
    """Schedule-Free AdamW in the paper's form (``schedulefree.AdamWScheduleFreePaper``): u = g / (√v + eps) with
    v uncorrected, and lr_t = lr·min(1, t/warmup_steps)·√(1 − β2^t) — so the correction also scales the decay at y
    and enters the averaging weights through lr_max. Arguments: see ``AdamWArguments``."""

    rule = ScheduleFreeAdamRule(correct_bias=False)

    def _lr_scale(self, group: dict[str, Any], t: int) -> float:
        return math.sqrt(bias_correction(group["betas"][1], t))


class SGDScheduleFree(SGDArguments, _FastScheduleFree):
    """Schedule-Free SGD, memory-efficient: state z only; β = ``momentum``. Arguments: see ``SGDArguments``."""
