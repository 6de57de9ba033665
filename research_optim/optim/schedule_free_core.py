"""The arithmetic every Schedule-Free optimizer shares (Defazio et al. 2024, arXiv 2405.15682).

Three sequences per parameter: z (the base iterate the gradient step moves), x (a weighted average of the z's —
evaluate and checkpoint here) and y (the point where gradients are taken)::

    sched = min(1, t / warmup_steps)                       (1 when warmup_steps = 0)
    lr_t  = lr · sched ;  lr_max = max(lr_max, lr_t)
    w_t   = t^r · lr_max^weight_lr_power ;  W += w_t ;  c_t = w_t / W      (c_t = 1/t for r = 0, no warmup)
    z ← z − lr_t · d                                       (d: the base direction, plus wd·y)
    x ← lerp(x, z, c_t)
    y ← lerp(z, x, β) = lerp(x, z, 1 − β)

The memory-efficient versions keep only z: the parameter tensor holds y while training and x while evaluating,
and the other point is recovered from the identity y = lerp(x, z, 1 − β) ⇔ x = lerp(y, z, 1 − 1/β). Substituting
the three updates into that identity gives one in-place update of y (see :func:`schedule_free_step_`).

This module holds that arithmetic once — the averaging weight c_t, the mode switches, the fused y update — and
:class:`ScheduleFreeOptimizer`, the base class with ``train()``/``eval()``, checkpoint consistency and
``diagnostics()``. The optimizers (``schedule_free``, ``schedule_free_reference``, ``schedule_free_wrapper``)
only supply their direction d and where x, y and z live.

Modes: like ``schedulefree`` 1.4.1, an optimizer starts in **eval mode** (no state exists yet, so p is x = y = z);
call ``optimizer.train()`` before the first ``step()``, which raises ``RuntimeError`` in eval mode. The mode is
stored in every param group (``train_mode``, the package's key) so it travels with ``state_dict()``; after
``load_state_dict`` the optimizer is in the mode it was saved in, which describes the model weights saved with it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor
from torch.optim import Optimizer

from research_optim.optim import checks
from research_optim.optim.cautious import MaskedFractionMixin, check_phi
from research_optim.optim.implementation import add_, lerp_
from research_optim.optim.rule import Rule

__all__ = [
    "SCHEDULE_FREE_GROUP_DEFAULTS", "AveragingStep", "averaging_step", "schedule_free_step_",
    "schedule_free_step_many_", "y_to_x_", "x_to_y_", "check_beta", "check_averaging", "ScheduleFreeOptimizer",
    "RuleScheduleFree", "ExplicitXYZ", "z_based_x_minus_y", "params_with_state",
]

# Per-group bookkeeping, under the package's key names so that its checkpoints load here.
SCHEDULE_FREE_GROUP_DEFAULTS: dict[str, Any] = dict(k=0, train_mode=False, weight_sum=0.0, lr_max=-1.0,
                                                    scheduled_lr=0.0)


# ---------------------------------------------------------------------------------------------------------------
# Checks and the shared arithmetic.


def check_beta(owner: str, name: str, value: Any) -> None:
    """β interpolates y between z and x; ``eval()`` divides by it, and β = 0 (y = z) leaves nothing averaged."""
    checks.open_unit_interval(owner, name, value, "the interpolation of y between x and z; 0 would leave no "
                              "average to evaluate — for plain SGD/AdamW use lib_sgd/lib_adamw")


def check_averaging(owner: str, r: Any, weight_lr_power: Any) -> None:
    checks.non_negative(owner, "r", r)
    checks.non_negative(owner, "weight_lr_power", weight_lr_power)


@dataclass(frozen=True)
class AveragingStep:
    """What one step of one param group uses: its step count t (from 1), lr_t and the averaging weight c_t."""

    t: int
    lr: float
    c: float


def averaging_step(group: dict[str, Any], base_lr: float, warmup_steps: int, r: float,
                   weight_lr_power: float, lr_scale: float = 1.0) -> AveragingStep:
    """Advance the group's counters (k, lr_max, weight_sum, scheduled_lr) by one step and return (t, lr_t, c_t).

    ``lr_scale`` multiplies lr_t after the warmup (RAdam's rectification, the paper form's √(1 − β2^t))."""
    t = group["k"] + 1
    sched = t / warmup_steps if t <= warmup_steps else 1.0
    lr = base_lr * sched * lr_scale
    group["scheduled_lr"] = lr
    lr_max = group["lr_max"] = max(lr, group["lr_max"])
    weight = (t**r) * (lr_max**weight_lr_power)
    weight_sum = group["weight_sum"] = group["weight_sum"] + weight
    # W = 0 only while every lr so far was 0: nothing to average yet, so x keeps its value (c = 0)
    c = weight / weight_sum if weight_sum != 0.0 else 0.0
    group["k"] = t
    return AveragingStep(t=t, lr=lr, c=c)


def schedule_free_step_(y: Tensor, z: Tensor, d: Tensor, lr: Any, c: Any, beta: Any) -> None:
    """One Schedule-Free step on (y, z) of one tensor without storing x, in place.

    With x = lerp(y, z, 1 − 1/β), the updates z' = z − lr·d, x' = lerp(x, z', c), y' = lerp(x', z', 1 − β) give
    y' = lerp(y, z, c) + lr·(β·(1 − c) − 1)·d, which needs neither x nor z'. ``d`` is only read. Numbers, or
    0-dim tensors in a compiled step."""
    lerp_(y, z, c)
    add_(y, d, lr * (beta * (1.0 - c) - 1.0))
    add_(z, d, -lr)


def schedule_free_step_many_(ys: list[Tensor], zs: list[Tensor], ds: list[Tensor], lr: float, c: float,
                             beta: float) -> None:
    """:func:`schedule_free_step_` for tensors of one device and dtype, as multi-tensor ops (same arithmetic)."""
    torch._foreach_lerp_(ys, zs, c)
    torch._foreach_add_(ys, ds, alpha=lr * (beta * (1.0 - c) - 1.0))
    torch._foreach_add_(zs, ds, alpha=-lr)


def y_to_x_(ps: list[Tensor], zs: list[Tensor], beta: float) -> None:
    """p: y → x, in place: x = lerp(y, z, 1 − 1/β) (inverts y = lerp(x, z, 1 − β))."""
    if ps:
        torch._foreach_lerp_(ps, zs, 1.0 - 1.0 / beta)


def x_to_y_(ps: list[Tensor], zs: list[Tensor], beta: float) -> None:
    """p: x → y, in place: y = lerp(x, z, 1 − β)."""
    if ps:
        torch._foreach_lerp_(ps, zs, 1.0 - beta)


# ---------------------------------------------------------------------------------------------------------------


class ScheduleFreeOptimizer(Optimizer):
    """Base class: modes, checkpoint consistency and diagnostics shared by every Schedule-Free optimizer.

    A subclass defines ``_beta(group)`` (the interpolation β of y), ``_to_eval_(group)``/``_to_train_(group)``
    (move the group's parameters from y to x and back) and ``_x_minus_y(p, state, group)`` (for ``xy_gap``),
    and starts ``step`` with ``loss = self._begin_step(closure)``.
    """

    # -- subclass interface ---------------------------------------------------------------------------------------
    def _beta(self, group: dict[str, Any]) -> float:
        raise NotImplementedError

    def _to_eval_(self, group: dict[str, Any]) -> None:
        raise NotImplementedError

    def _to_train_(self, group: dict[str, Any]) -> None:
        raise NotImplementedError

    def _x_minus_y(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> Tensor | None:
        raise NotImplementedError

    # -- modes ----------------------------------------------------------------------------------------------------
    @property
    def train_mode(self) -> bool:
        """True when the parameters hold y (training), False when they hold x (evaluation, checkpoints)."""
        modes = {bool(group["train_mode"]) for group in self.param_groups}
        if len(modes) != 1:
            raise RuntimeError(f"{type(self).__name__}: param groups disagree on train/eval mode; "
                               "call optimizer.train() or optimizer.eval() to make them consistent")
        return modes.pop()

    @torch.no_grad()
    def train(self) -> None:
        """Put y in the parameters (no-op if already in train mode). Call before training steps."""
        for group in self.param_groups:
            if not group["train_mode"]:
                self._to_train_(group)
                group["train_mode"] = True

    @torch.no_grad()
    def eval(self) -> None:
        """Put x in the parameters (no-op if already in eval mode). Call before evaluation and checkpointing."""
        for group in self.param_groups:
            if group["train_mode"]:
                self._to_eval_(group)
                group["train_mode"] = False

    def _begin_step(self, closure: Callable[[], Any] | None) -> Any:
        """Refuse to step in eval mode, then evaluate the closure (if any) with gradients on; returns its loss."""
        if not all(group["train_mode"] for group in self.param_groups):
            raise RuntimeError(f"{type(self).__name__}.step() called in eval mode: the parameters hold the average "
                               "x, not the gradient point y. Call optimizer.train() before training steps "
                               "(and optimizer.eval() before evaluation or checkpointing).")
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()

    def _init_group_bookkeeping(self, group: dict[str, Any]) -> None:
        """Give a group the averaging counters; a group added later joins in the optimizer's current mode."""
        others = [g for g in self.param_groups if g is not group and "train_mode" in g]
        for key, value in SCHEDULE_FREE_GROUP_DEFAULTS.items():
            group.setdefault(key, value)
        if others:
            # its parameters have no z yet, so they are x = y = z and either flag describes them correctly
            group["train_mode"] = bool(others[0]["train_mode"])

    # -- checkpoints ----------------------------------------------------------------------------------------------
    def _check_loaded_state(self) -> None:
        """After load_state_dict: the state must fit the parameters and the groups must agree on the mode.

        ``schedulefree`` issue #32: a checkpoint whose state does not line up with the parameters loads silently
        and only fails (or silently corrupts p) at the next ``train()``. Here it fails at load time, naming the
        tensor; and since every group carries the mode it was saved in, p (loaded from the same checkpoint)
        and the mode flag agree, so ``train()`` after loading an eval-mode checkpoint recovers y exactly.
        """
        owner = type(self).__name__
        for gi, group in enumerate(self.param_groups):
            for key, value in SCHEDULE_FREE_GROUP_DEFAULTS.items():
                group.setdefault(key, value)
            for pi, p in enumerate(group["params"]):
                for key, value in self.state.get(p, {}).items():
                    if isinstance(value, Tensor) and value.dim() > 0 and value.shape != p.shape:
                        raise ValueError(f"{owner}.load_state_dict: state[{key!r}] of param {pi} in group {gi} has "
                                         f"shape {tuple(value.shape)}, the parameter has {tuple(p.shape)}; the "
                                         "checkpoint does not match this model's parameter order")
        self.train_mode  # raises if the loaded groups disagree on the mode

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._check_loaded_state()

    # -- diagnostics ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def xy_gap(self) -> Tensor:
        """‖x − y‖₂ over all parameters, as a device tensor (computed on demand only)."""
        total: Tensor | None = None
        for group in self.param_groups:
            for p in group["params"]:
                diff = self._x_minus_y(p, self.state.get(p, {}), group)
                if diff is None:
                    continue
                sq = diff.float().square().sum() if diff.dtype in (torch.float16, torch.bfloat16) \
                    else diff.square().sum()
                total = sq if total is None else total + sq.to(total.device)
        return torch.zeros(()) if total is None else total.sqrt()

    def _masked_fraction(self) -> dict[str, float]:
        return {}

    def diagnostics(self) -> dict[str, float]:
        """``lr_applied`` (warmup included; per group as ``lr_applied/<i>`` when there are several), ``xy_gap``
        and, with cautious on, ``masked_fraction``. Host sync: call at logging time only."""
        out: dict[str, float] = {"lr_applied": float(self.param_groups[0]["scheduled_lr"])}
        if len(self.param_groups) > 1:
            for i, group in enumerate(self.param_groups):
                out[f"lr_applied/{i}"] = float(group["scheduled_lr"])
        out["xy_gap"] = float(self.xy_gap())
        out.update(self._masked_fraction())
        return out


def z_based_x_minus_y(p: Tensor, z: Tensor | None, beta: float, train_mode: bool) -> Tensor | None:
    """x − y for the versions that keep only z: in train mode p = y and x − y = (1 − 1/β)(z − y); in eval mode
    p = x and x − y = −(1 − β)(z − x)."""
    if z is None:
        return None
    factor = (1.0 - 1.0 / beta) if train_mode else -(1.0 - beta)
    return (z - p).mul_(factor)


def params_with_state(group: dict[str, Any], state: dict[Tensor, dict[str, Any]], key: str) -> tuple[
        list[Tensor], list[Tensor]]:
    """The group's parameters that have ``state[p][key]``, and those state tensors (on p's device)."""
    ps, buffers = [], []
    for p in group["params"]:
        buf = state.get(p, {}).get(key)
        if buf is not None:
            ps.append(p)
            buffers.append(buf)
    return ps, buffers


class ExplicitXYZ:
    """Mixin for the Reference versions, which store x, y and z per parameter: a mode switch copies x (eval) or y
    (train) into the parameter, and x − y is read from the state."""

    state: Any

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


class RuleScheduleFree(MaskedFractionMixin, ScheduleFreeOptimizer):
    """Schedule-Free around an update rule (AdamW: ``schedule_free.ScheduleFreeAdamRule``; SGD: the
    gradient itself): the group checks (lr, weight_decay, warmup_steps, r, weight_lr_power, β, cautious and the
    rule's own) and the cautious masked-fraction counter, shared by the memory-efficient and the Reference versions.
    A subclass sets ``rule`` and ``_beta``."""

    rule: Rule

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        owner = type(self).__name__
        checks.positive(owner, "lr", group["lr"])
        checks.non_negative(owner, "weight_decay", group["weight_decay"])
        checks.integer(owner, "warmup_steps", group.get("warmup_steps", 0))
        check_averaging(owner, group["r"], group["weight_lr_power"])
        check_phi(owner, group["cautious"], group["cautious_factor"])
        self.rule.check(owner, group)
        refusal = self.rule.cautious_refusal(group) if group["cautious"] is not None else None
        if refusal is not None:
            raise ValueError(f"{owner}: cautious={group['cautious']!r} would mean nothing here: {refusal}")
        self._check_beta(group)
        self._init_group_bookkeeping(group)

    def _check_beta(self, group: dict[str, Any]) -> None:
        raise NotImplementedError

    def _lr_scale(self, group: dict[str, Any], t: int) -> float:
        """A factor on lr_t at step t beyond the warmup (1; RAdam's rectification, the paper form's √(1 − β2^t))."""
        return 1.0

    def _averaging_step(self, group: dict[str, Any]) -> AveragingStep:
        """This step's (t, lr_t, c_t) for ``group``, advancing its counters."""
        return averaging_step(group, group["lr"], group.get("warmup_steps", 0), group["r"], group["weight_lr_power"],
                              self._lr_scale(group, group["k"] + 1))
