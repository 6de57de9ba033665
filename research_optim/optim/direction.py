"""Base class for "direction" optimizers: p ← p·(1 − lr·wd) − lr·cautious(u).

AdamW, Lion and SGD-momentum differ only in the direction ``u`` they propose and the state they keep; the
decoupled weight decay, the optional cautious mask (``research_optim.optim.cautious``) and its masked-fraction
diagnostic are the same for all, so they live here once. A subclass defines

* ``_validate_group(group)`` — check its own hyperparameters (called for every param group, defaults included);
* ``_init_state(p, state, group)`` — create its state buffers on the first step of ``p``;
* ``_direction(grad, state, group)`` — return ``u`` (may update state that ``u`` depends on);
* ``_after_update(grad, state, group)`` — optional, state updates that come after the parameter step (Lion).

The per-tensor functions each subclass calls (``adam_direction``, ``lion_direction``, ...) are plain functions
of tensors. The fast path: a subclass also defines ``_compiled_step(group, params, grads, states)``, which runs
its multi-tensor function of ``fused_direction`` compiled (see ``implementation``); ``implementation="auto"``
(default) takes it for large groups, ``"reference"`` keeps the per-tensor loop below. State keys are the same in
both, so a state_dict moves between implementations.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor
from torch.optim import Optimizer

from research_optim.optim.cautious import MaskedFraction, cautious_direction, check_phi
from research_optim.optim.implementation import COMPILE_FAILED, buckets, check_implementation, use_compiled

__all__ = [
    "DirectionOptimizer",
    "decoupled_step_",
    "check_lr",
    "check_betas",
    "check_eps",
    "check_weight_decay",
    "check_unit_interval",
]


# ---------------------------------------------------------------------------------------------------------------
# Hyperparameter validation: every error names the argument and the allowed range.


def check_lr(lr: float, owner: str) -> None:
    if not 0.0 < lr < math.inf:
        raise ValueError(f"{owner}: lr must be > 0 and finite, got {lr}")


def check_betas(betas: tuple[float, ...], owner: str, count: int = 2) -> None:
    if len(betas) != count:
        raise ValueError(f"{owner}: betas must have {count} entries, got {betas}")
    for i, beta in enumerate(betas):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"{owner}: betas[{i}] must be in [0, 1), got {beta}")


def check_eps(eps: float, owner: str) -> None:
    if not eps >= 0.0:
        raise ValueError(f"{owner}: eps must be >= 0, got {eps}")


def check_weight_decay(weight_decay: float, owner: str) -> None:
    if not weight_decay >= 0.0:
        raise ValueError(f"{owner}: weight_decay must be >= 0, got {weight_decay}")


def check_unit_interval(name: str, value: float, owner: str) -> None:
    """``value`` in [0, 1) — momentum-like coefficients."""
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{owner}: {name} must be in [0, 1), got {value}")


# ---------------------------------------------------------------------------------------------------------------


def decoupled_step_(p: Tensor, u: Tensor, lr: float, weight_decay: float) -> None:
    """p ← p·(1 − lr·wd) − lr·u, in place. The decay is applied first (as torch/timm do) and is never masked."""
    if weight_decay != 0.0:
        p.mul_(1.0 - lr * weight_decay)
    p.add_(u, alpha=-lr)


class DirectionOptimizer(Optimizer):
    """p ← p·(1 − lr·wd) − lr·u∘φ(u∘g) per tensor, with φ the cautious mask (identity when ``cautious=None``).

    ``cautious`` (a φ name from ``cautious.PHI_FUNCTIONS`` or None) and ``cautious_factor`` are param-group
    options like ``lr``. ``diagnostics()`` reports ``masked_fraction`` (over the steps since the previous call)
    whenever some group has caution on.
    """

    def __init__(self, params: Any, defaults: dict[str, Any], implementation: str = "auto") -> None:
        check_implementation(implementation, type(self).__name__)
        # an attribute, not a group option: state_dicts stay identical across implementations
        self.implementation = implementation
        self._masked = MaskedFraction()
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._masked = MaskedFraction()  # not part of Optimizer.__getstate__ (a diagnostic, not training state)
        self.__dict__.setdefault("implementation", "auto")

    # -- subclass interface ---------------------------------------------------------------------------------------
    def _validate_group(self, group: dict[str, Any]) -> None:
        raise NotImplementedError

    def _init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        raise NotImplementedError

    def _direction(self, grad: Tensor, state: dict[str, Any], group: dict[str, Any]) -> Tensor:
        raise NotImplementedError

    def _after_update(self, grad: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        """State updates that must follow the parameter step (none by default)."""

    def _compiled_step(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor],
                       states: list[dict[str, Any]]) -> Any:
        """The compiled multi-tensor step of one bucket (one device, dtype) through ``call_compiled``: the masked
        count, None without caution, or ``COMPILE_FAILED`` (then nothing, state included, may have changed)."""
        raise NotImplementedError

    def _bucket_key(self, p: Tensor, state: dict[str, Any]) -> Any:
        """Tensors stepped by one compiled call share this key (subclasses add e.g. the step count)."""
        return (p.device, p.dtype)

    # -- shared machinery ---------------------------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        owner = type(self).__name__
        check_lr(group["lr"], owner)
        check_weight_decay(group["weight_decay"], owner)
        check_phi(group["cautious"], group["cautious_factor"])
        self._validate_group(group)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if use_compiled(self.implementation, sum(p.numel() for p in params)):
                params = self._fast_group_step(group, params)  # what is left if the compiler failed
            for p in params:
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                state = self.state[p]
                if len(state) == 0:
                    self._init_state(p, state, group)
                u = self._direction(grad, state, group)
                u = cautious_direction(u, grad, group["cautious"], group["cautious_factor"], self._masked)
                decoupled_step_(p, u, group["lr"], group["weight_decay"])
                self._after_update(grad, state, group)
        return loss

    def _fast_group_step(self, group: dict[str, Any], params: list[Tensor]) -> list[Tensor]:
        """Step ``params`` bucket by bucket with the compiled step; returns the parameters left for the reference
        path (none, unless compilation failed)."""
        for p in params:
            if p.grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            if len(self.state[p]) == 0:
                self._init_state(p, self.state[p], group)
        keyed = [(self._bucket_key(p, self.state[p]), p) for p in params]
        left = list(params)
        for bucket in buckets(keyed).values():
            masked = self._compiled_step(group, bucket, [p.grad for p in bucket], [self.state[p] for p in bucket])
            if masked is COMPILE_FAILED:
                return left
            if masked is not None:
                self._masked.add_count(masked, sum(p.numel() for p in bucket))
            done = {id(p) for p in bucket}
            left = [p for p in left if id(p) not in done]
        return left

    @property
    def cautious_enabled(self) -> bool:
        return any(group["cautious"] is not None for group in self.param_groups)

    def diagnostics(self) -> dict[str, float]:
        """``masked_fraction`` over the steps since the previous call (host sync: call at logging time only)."""
        if not self.cautious_enabled:
            return {}
        return {"masked_fraction": self._masked.pop()}
