"""Schedule-Free over any base optimizer (Defazio et al. 2024; ``schedulefree.ScheduleFreeWrapper``).

The base optimizer's step becomes the z step: for each parameter the wrapper puts z into the parameter tensor,
lets ``base.step()`` update it with its own rule and state (momentum, preconditioner, its own weight decay — which
is then decay at z), and averages::

    z ← base_step(z)                                (the base reads p.grad, the gradient at y)
    x ← lerp(x, z, c_t)                             c_t from the base's lr (× group["d"] for D-Adaptation/Prodigy)
    y ← lerp(x, z, 1 − β)                           β = ``momentum``

State: z per parameter, in the wrapper's own ``state`` (not in the base's: torch's Adam/AdamW/RMSprop initialise
their state only when it is empty, so the package's wrappers, which put z there, fail on them with
``KeyError: 'exp_avg'`` under torch 2.x); y in the parameter while training and x while evaluating — as in the
fast versions, with the same ``train()``/``eval()`` protocol, starting in eval mode.

``weight_decay_at_y`` = λ adds z ← z − lr·λ·y before the base step (x is unchanged by it), in every group; it
assumes the base uses ``group["lr"]`` as its learning rate. No warmup of its own: the base's lr is used as given
(schedule it, or not, outside).

The wrapper is a ``torch.optim.Optimizer`` whose ``param_groups`` are the base's own list of dicts (so LR
schedulers see one set of groups; the averaging counters and the mode live in them). ``state_dict()`` is
``{"base": base.state_dict(), "z": {flat param index: z}}``. For configs, :func:`schedule_free_wrapped` builds
the base from the param groups.

:class:`ScheduleFreeWrapperReference` (``schedulefree.ScheduleFreeWrapperReference``) stores x, y and z and copies
them instead of extrapolating one point from the other two (a lerp with weight 1 − 1/β < 0): three buffers per
parameter instead of one — the package recommends it for research, as easy to modify and numerically stable.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Union

import torch
from torch import Tensor
from torch.optim import Optimizer

from research_optim.optim import checks
from research_optim.optim.registry import OPTIMIZERS
from research_optim.optim.schedule_free_core import (
    SCHEDULE_FREE_GROUP_DEFAULTS,
    AveragingStep,
    ExplicitXYZ,
    ScheduleFreeOptimizer,
    averaging_step,
    check_averaging,
    check_beta,
    params_with_state,
    x_to_y_,
    y_to_x_,
    z_based_x_minus_y,
)

__all__ = ["ScheduleFreeWrapper", "ScheduleFreeWrapperReference", "schedule_free_wrapped", "BaseSpec"]

BaseSpec = Union[Optimizer, Callable[..., Optimizer], str]


def _swap_(a: Tensor, b: Tensor) -> None:
    """Exchange the values of two same-shaped tensors in place (storages stay where they are, so views such
    as FSDP/DDP flat buffers and the base's state keys remain valid); one temporary of one tensor's size."""
    tmp = a.clone()
    a.copy_(b)
    b.copy_(tmp)


class ScheduleFreeWrapper(ScheduleFreeOptimizer):
    """Make ``base`` schedule-free.

    Args:
        base: a constructed ``torch.optim.Optimizer`` over the parameters (any rule: torch AdamW/SGD/RMSprop, the
            library's Lion/AdamW, ...). Its momentum is optional — the wrapper supplies the y/x interpolation.
        momentum: β ∈ (0, 1); y = lerp(x, z, 1 − β). Default 0.9.
        weight_decay_at_y: λ ≥ 0, decay computed at y (the base's own weight_decay acts at z). Default 0.
        r: polynomial weighting of the average (≥ 0). Default 0.
        weight_lr_power: w_t ∝ lr_max^weight_lr_power (≥ 0). Default 2.
    """

    buffers: tuple[str, ...] = ("z",)  # per parameter, in the wrapper's own state

    def __init__(self, base: Optimizer, momentum: float = 0.9, weight_decay_at_y: float = 0.0, r: float = 0.0,
                 weight_lr_power: float = 2.0) -> None:
        owner = type(self).__name__
        if not isinstance(base, Optimizer):
            raise TypeError(f"{owner}: base must be a torch.optim.Optimizer instance, got {type(base).__name__}")
        if isinstance(base, ScheduleFreeOptimizer):
            raise ValueError(f"{owner}: base {type(base).__name__} is already schedule-free")
        check_beta(owner, "momentum", momentum)
        checks.non_negative(owner, "weight_decay_at_y", weight_decay_at_y)
        check_averaging(owner, r, weight_lr_power)
        for key in SCHEDULE_FREE_GROUP_DEFAULTS:
            if any(key in group for group in base.param_groups):
                raise ValueError(f"{owner}: the base's param groups already use the key {key!r}, which the "
                                 "wrapper needs for its averaging counters")
        self.base = base
        self.momentum = float(momentum)
        self.weight_decay_at_y = float(weight_decay_at_y)
        self.r = float(r)
        self.weight_lr_power = float(weight_lr_power)
        # Optimizer.__init__ sets up the hooks and an empty state (the wrapper's: z only) and calls
        # add_param_group for each of the base's groups, which adopts them (below) instead of copying
        super().__init__(base.param_groups, dict(base.defaults))
        self.param_groups = base.param_groups

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    # -- group bookkeeping ----------------------------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Groups belong to the base: a new group is added to the base first, then given the averaging counters."""
        if not any(param_group is group for group in self.base.param_groups):
            self.base.add_param_group(param_group)
            param_group = self.base.param_groups[-1]
        self._init_group_bookkeeping(param_group)

    def _beta(self, group: dict[str, Any]) -> float:
        return self.momentum

    def _to_eval_(self, group: dict[str, Any]) -> None:
        y_to_x_(*params_with_state(group, self.state, "z"), self.momentum)

    def _to_train_(self, group: dict[str, Any]) -> None:
        x_to_y_(*params_with_state(group, self.state, "z"), self.momentum)

    def _x_minus_y(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> Tensor | None:
        return z_based_x_minus_y(p, state.get("z"), self.momentum, bool(group["train_mode"]))

    # -- checkpoints ----------------------------------------------------------------------------------------------
    def _flat_params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def state_dict(self) -> dict[str, Any]:
        """The base's state dict (its groups carry the averaging counters and the mode) and each of ``buffers``
        (z; the Reference: x, y, z) by param index."""
        params = self._flat_params()
        return {"base": self.base.state_dict(),
                **{key: {i: self.state[p][key] for i, p in enumerate(params) if key in self.state.get(p, {})}
                   for key in self.buffers}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base.load_state_dict(state_dict["base"])
        # Optimizer.load_state_dict rebinds the base's list of groups: share the new one
        self.param_groups = self.base.param_groups
        params = self._flat_params()
        self.state = defaultdict(dict)
        for key in self.buffers:
            for index, value in state_dict[key].items():
                if not 0 <= int(index) < len(params):
                    raise ValueError(f"{type(self).__name__}.load_state_dict: {key} for param {index}, but the "
                                     f"optimizer has {len(params)} parameters")
                p = params[int(index)]
                self.state[p][key] = value.detach().to(device=p.device, dtype=p.dtype, copy=True)
        self._check_loaded_state()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none)

    # -- the step -------------------------------------------------------------------------------------------------
    def _averaging_step(self, group: dict[str, Any]) -> AveragingStep:
        """(t, lr_t, c_t) from the base's lr (× group["d"]: D-Adaptation / Prodigy scale their lr by it)."""
        return averaging_step(group, group["lr"] * group.get("d", 1.0), 0, self.r, self.weight_lr_power)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = self._begin_step(closure)
        beta, decay = self.momentum, self.weight_decay_at_y
        active = [[p for p in group["params"] if p.grad is not None] for group in self.param_groups]
        for group, params in zip(self.param_groups, active):
            for p in params:
                state = self.state[p]
                if "z" not in state:  # first step: x = y = z = p
                    state["z"] = p.detach().clone(memory_format=torch.preserve_format)
                z = state["z"]
                if decay != 0.0:
                    # z ← z − lr·λ·y; scaling y by 1 − lr·λ·(1 − β) as well keeps x = lerp(y, z, 1 − 1/β) fixed
                    z.sub_(p, alpha=group["lr"] * decay)
                    p.mul_(1.0 - group["lr"] * decay * (1.0 - beta))
                p.lerp_(z, 1.0 - 1.0 / beta)  # p: y → x
                _swap_(p, z)  # p holds z for the base step; the z buffer keeps x meanwhile
        self.base.step()
        for group, params in zip(self.param_groups, active):
            avg = self._averaging_step(group)
            for p in params:
                z = self.state[p]["z"]
                _swap_(p, z)  # p: x, buffer: the new z
                p.lerp_(z, avg.c)  # x ← lerp(x, z, c)
                p.lerp_(z, 1.0 - beta)  # p: x → y
        return loss


class ScheduleFreeWrapperReference(ExplicitXYZ, ScheduleFreeWrapper):
    """Make ``base`` schedule-free, with x, y and z stored (see the module docstring); same arguments::

        z ← z − lr·λ·y ; p ← z ; base.step() ; z ← p ; x ← lerp(x, z, c_t) ; y ← lerp(x, z, 1 − β) ; p ← y

    Parameters without a gradient are left alone, as by torch's optimizers (the package's class decays them at y).
    """

    buffers = ("x", "y", "z")

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = self._begin_step(closure)
        active = [[p for p in group["params"] if p.grad is not None] for group in self.param_groups]
        for group, params in zip(self.param_groups, active):
            for p in params:
                state = self.state[p]
                if "z" not in state:
                    for key in self.buffers:
                        state[key] = p.detach().clone(memory_format=torch.preserve_format)
                if self.weight_decay_at_y != 0.0:
                    state["z"].sub_(state["y"], alpha=group["lr"] * self.weight_decay_at_y)
                p.copy_(state["z"])
        self.base.step()
        for group, params in zip(self.param_groups, active):
            avg = self._averaging_step(group)
            for p in params:
                x, y, z = (self.state[p][key] for key in self.buffers)
                z.copy_(p)
                x.lerp_(z, avg.c)
                y.copy_(x).lerp_(z, 1.0 - self.momentum)
                p.copy_(y)
        return loss


def schedule_free_wrapped(params: Any, base: BaseSpec, base_kwargs: dict[str, Any] | None = None,
                          reference: bool = False, **wrapper_kwargs: Any) -> ScheduleFreeWrapper:
    """Build the base over ``params`` and wrap it — the config entry point.

    ``base`` is a constructed optimizer (used as is; ``params`` must then be None), a class or partial such as
    the one Hydra makes from ``{_target_: torch.optim.AdamW, _partial_: true, lr: ...}``, or a name of
    ``research_optim.optim.registry.OPTIMIZERS`` (a config name: ``"adamw"``, ``"lion"``, ``"muon"``, ...).
    ``base_kwargs`` go to the base's constructor, ``wrapper_kwargs`` (momentum, weight_decay_at_y, r,
    weight_lr_power) to the wrapper; ``reference=True`` builds :class:`ScheduleFreeWrapperReference`.
    So ``hydra.utils.instantiate(node)(param_groups)`` of ``conf/optimizer/sf_wrapper.yaml`` returns the wrapper.
    """
    checks.boolean("schedule_free_wrapped", "reference", reference)
    wrapper = ScheduleFreeWrapperReference if reference else ScheduleFreeWrapper
    if isinstance(base, Optimizer):
        if params is not None or base_kwargs:
            raise ValueError("schedule_free_wrapped: base is already constructed; pass params=None and no base_kwargs")
        return wrapper(base, **wrapper_kwargs)
    if isinstance(base, str):
        if base not in OPTIMIZERS:
            raise ValueError(f"schedule_free_wrapped: unknown base {base!r}; choose one of {sorted(OPTIMIZERS)}, "
                             "or pass an optimizer class or factory")
        base = OPTIMIZERS[base]
    if not callable(base):
        raise TypeError(f"schedule_free_wrapped: base must be an optimizer, a class or factory, or a name; "
                        f"got {base!r}")
    return wrapper(base(params, **dict(base_kwargs or {})), **wrapper_kwargs)
