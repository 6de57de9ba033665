"""Direction optimizers: a rule's direction u, the cautious mask and decoupled weight decay, per tensor::

    p ← p·(1 − lr·λ) − η·u∘φ(u∘g)          η = lr (Muon: lr·r(shape); Adafactor: its relative step)

AdamW, Lion, SGD, Muon and Adafactor differ only in their rule (``research_optim.optim.rule``); the decay — applied
first, as torch and timm do, and never masked —, the optional cautious mask (``cautious``) and its masked-fraction
diagnostic, and the three implementations (``implementation``: per-tensor reference, foreach twin, compiled) are
here once. A subclass sets ``rule`` (or overrides :meth:`DirectionOptimizer.rule_of` to give groups different
rules, as Muon does) and passes its defaults. State keys are the same in every implementation, so a state_dict
moves between them.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor
from torch.optim import Optimizer

from research_optim.optim import checks
from research_optim.optim.cautious import (
    MaskedFractionMixin, cautious_direction, cautious_directions, cautious_masked, check_phi,
)
from research_optim.optim.implementation import (
    add_, bucket_indices, check_implementation, compiled_each, graph_inputs, resolve, scalar,
)
from research_optim.optim.rule import Rule
from research_optim.optim.sharded import is_sharded

__all__ = ["DirectionOptimizer", "decoupled_step_"]


def decoupled_step_(p: Tensor, u: Tensor, lr: Any, weight_decay: Any, step_size: Any) -> None:
    """p ← p·(1 − lr·λ) − η·u, in place (numbers, or 0-dim tensors in a compiled step: then the decay is always
    applied, an exact multiplication by 1 when λ = 0)."""
    if isinstance(weight_decay, Tensor) or weight_decay != 0.0:
        p.mul_(1.0 - lr * weight_decay)
    add_(p, u, -step_size)


def _compiled_step(p: Tensor, g: Tensor, state: dict[str, Tensor], rule: Rule, s: dict[str, Any], lr: Tensor,
                   weight_decay: Tensor, phi: str | None, cautious_factor: float) -> Tensor | None:
    """The reference step of one tensor, written to be ``torch.compile``d (``implementation.compiled_each``: flat
    views, hyperparameters as 0-dim tensors; ``rule``, ``phi`` and ``cautious_factor`` static). Returns the masked
    count (None without caution)."""
    u = rule.direction(p, g, state, s)
    count = None
    if phi is not None:
        u, count = cautious_masked(u, g, phi, cautious_factor, rule.sign_source(g, state))
    decoupled_step_(p, u, lr, weight_decay, lr)
    return count


class DirectionOptimizer(MaskedFractionMixin, Optimizer):
    """p ← p·(1 − lr·λ) − η·u∘φ(u∘g) per tensor, u from the group's rule, φ the cautious mask (identity when
    ``cautious=None``).

    ``lr``, ``weight_decay``, ``cautious`` (a φ name of ``cautious.PHI_FUNCTIONS`` or None) and ``cautious_factor``
    are param-group options, checked for every group along with the rule's own. ``diagnostics()`` reports
    ``masked_fraction`` (over the steps since the previous call) whenever some group has caution on.
    """

    rule: Rule

    def __init__(self, params: Any, defaults: dict[str, Any], implementation: str = "auto") -> None:
        super().__init__(params, defaults)
        check_implementation(type(self).__name__, implementation, self.paths)
        # an attribute, not a group option: state_dicts stay identical across implementations
        self.implementation = implementation

    def rule_of(self, group: dict[str, Any]) -> Rule:
        """The rule stepping ``group`` (the class's ``rule`` unless a subclass mixes rules)."""
        return self.rule

    @property
    def paths(self) -> tuple[str, ...]:
        """The implementations every group's rule has."""
        rules = [self.rule_of(group) for group in self.param_groups]
        return tuple(path for path in ("reference", "foreach", "compiled") if all(path in r.paths for r in rules))

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "implementation": self.implementation}

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self._check_group(self.param_groups[-1])

    def _check_group(self, group: dict[str, Any]) -> None:
        owner = type(self).__name__
        checks.positive(owner, "lr", group["lr"])
        checks.non_negative(owner, "weight_decay", group["weight_decay"])
        check_phi(owner, group["cautious"], group["cautious_factor"])
        self.rule_of(group).check(owner, group)

    # -- the step -------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        available = self.paths  # the optimizer's, so every group of a mixed-rule one (Muon) takes the same choice
        for group in self.param_groups:
            rule = self.rule_of(group)
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                if p.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                if len(self.state[p]) == 0:
                    if rule.counts_steps:
                        self.state[p]["step"] = 0  # a Python int: bias corrections need no device read
                    rule.init_state(p, self.state[p], group)
            path = resolve(self.implementation, available, sum(p.numel() for p in params),
                           sharded=any(is_sharded(p) for p in params))
            eager = self._foreach_group_step if path != "reference" and "foreach" in rule.paths \
                else self._reference_group_step
            if path == "compiled":  # with the eager path for the tensors it leaves
                self._compiled_group_step(group, rule, params, lambda rest: eager(group, rule, rest))
            else:
                eager(group, rule, params)
        return loss

    def _reference_group_step(self, group: dict[str, Any], rule: Rule, params: list[Tensor]) -> None:
        lr, weight_decay, phi, factor = group["lr"], group["weight_decay"], group["cautious"], group["cautious_factor"]
        s = None if rule.counts_steps else rule.scalars(group, 0)
        for p in params:
            state = self.state[p]
            if rule.counts_steps:
                state["step"] += 1
                s = rule.scalars(group, state["step"])
            u = rule.direction(p, p.grad, state, s)
            u = cautious_direction(u, p.grad, phi, factor, self._masked, rule.sign_source(p.grad, state))
            decoupled_step_(p, u, lr, weight_decay, rule.step_size(p, u, state, group))

    def _buckets(self, rule: Rule, params: list[Tensor]) -> list[list[Tensor]]:
        steps = [self.state[p].get("step", 0) for p in params]  # one bias correction per multi-tensor call
        return [[params[i] for i in idx] for idx in bucket_indices(params, steps)]

    def _foreach_group_step(self, group: dict[str, Any], rule: Rule, params: list[Tensor]) -> None:
        lr, weight_decay, phi, factor = group["lr"], group["weight_decay"], group["cautious"], group["cautious_factor"]
        for bucket in self._buckets(rule, params):
            states = [self.state[p] for p in bucket]
            grads = [p.grad for p in bucket]
            step = states[0].get("step", -1) + 1
            us = rule.directions(bucket, grads, states, rule.scalars(group, step))
            if rule.counts_steps:
                for state in states:
                    state["step"] = step
            signs = [rule.sign_source(g, st) for g, st in zip(grads, states)] if phi is not None else None
            us = cautious_directions(us, grads, phi, factor, self._masked, signs)
            if weight_decay != 0.0:
                torch._foreach_mul_(bucket, 1.0 - lr * weight_decay)
            sizes = [rule.step_size(p, u, st, group) for p, u, st in zip(bucket, us, states)]
            for idx in bucket_indices(bucket, sizes):  # one alpha per multi-tensor add (Muon: one per shape)
                torch._foreach_add_([bucket[i] for i in idx], [us[i] for i in idx], alpha=-sizes[idx[0]])

    def _compiled_group_step(self, group: dict[str, Any], rule: Rule, params: list[Tensor],
                             eager_step: Callable[[list[Tensor]], None]) -> None:
        """Step ``params`` one by one with the compiled step, those it leaves with ``eager_step`` (the ones it cannot
        take, see ``implementation.compilable``; all not yet stepped if compilation failed)."""
        hyper = scalar(group["lr"]), scalar(group["weight_decay"]), group["cautious"], float(group["cautious_factor"])
        args: dict[int, tuple[Any, ...]] = {}  # per step count (one, unless parameters joined late)

        def args_of(p: Tensor) -> tuple[Any, ...]:
            step = self.state[p]["step"] + 1 if rule.counts_steps else 0
            if step not in args:
                args[step] = (rule, graph_inputs(rule.scalars(group, step)), *hyper)
            return args[step]

        def tensors_of(p: Tensor) -> tuple[Any, ...]:
            state = self.state[p]
            return p, p.grad, {key: state[key] for key in rule.buffers if key in state}

        min_numel = rule.auto_compiled_min_numel if self.implementation == "auto" else 0
        stepped, masked = compiled_each(_compiled_step, self, params, tensors_of, args_of, eager_step, min_numel)
        if rule.counts_steps:
            for p in stepped:
                self.state[p]["step"] += 1
        if masked is not None:
            self._masked.add_count(masked, sum(p.numel() for p in stepped))

    # -- diagnostics ----------------------------------------------------------------------------------------------
    def diagnostics(self) -> dict[str, float]:
        """``masked_fraction`` over the steps since the previous call (host sync: call at logging time only)."""
        return self._masked_fraction()
