"""Backtracking Armijo line search — the machinery SaLSA, SLS and Adam-SLS share.

Every line search here tries points on one ray ``p(η) = p0 − η·d`` and accepts the first step size that passes
the Armijo sufficient-decrease test (Armijo 1966; Vaswani et al. 2019, arXiv 1905.09997)::

    f(p0) − f(p0 − η·d)  ≥  c · η · ⟨g, d⟩            (backtrack η ← β_b·η until it holds)

SaLSA (Kenneweg et al. 2024, arXiv 2407.20650) smooths both sides with an EMA (rate β3)::

    D̄ ← β3·D̄ + (1−β3)·(f(p0) − f(p0 − η·d))      Ḡ ← β3·Ḡ + (1−β3)·⟨g, d⟩       test  D̄ ≥ c·η·Ḡ

This module holds, once: the closure protocol (:class:`LossEvaluator` — the seed's ``closure(backwards)`` form
and the plain no-argument form, with the RNG state replayed for every evaluation of a step), the ray of trial
points (:class:`ParameterRay`), the backtracking loop (:func:`backtracking_armijo`), the cross-rank mean of the
scalars the test compares (:func:`mean_over_ranks`) and the update directions searched along (:data:`RULES`).
"""
from __future__ import annotations

import inspect
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
from torch import Tensor
from torch.optim import Optimizer

from research_optim.optim.implementation import buckets

__all__ = [
    "LossEvaluator",
    "ParameterRay",
    "ArmijoResult",
    "backtracking_armijo",
    "mean_over_ranks",
    "takes_backwards_flag",
    "bias_correction",
    "AdamRule",
    "SgdRule",
    "SignRule",
    "RULES",
    "check_positive",
    "check_open_unit",
    "check_unit_interval",
    "check_betas",
    "check_count",
    "refuse_grad_scaler",
    "SearchStats",
    "device_dtype_groups",
    "per_bucket",
]

# ---------------------------------------------------------------------------------------------------------------
# Hyperparameter validation: every error names the argument and the allowed range.


def check_positive(name: str, value: float, owner: str) -> None:
    if not 0.0 < value < math.inf:
        raise ValueError(f"{owner}: {name} must be > 0 and finite, got {value}")


def check_open_unit(name: str, value: float, owner: str) -> None:
    """``value`` in (0, 1) — Armijo constant c, backtracking factor."""
    if not 0.0 < value < 1.0:
        raise ValueError(f"{owner}: {name} must be in (0, 1), got {value}")


def check_unit_interval(name: str, value: float, owner: str) -> None:
    """``value`` in [0, 1) — EMA rates."""
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{owner}: {name} must be in [0, 1), got {value}")


def check_betas(name: str, betas: Sequence[float], owner: str) -> None:
    if len(betas) != 2:
        raise ValueError(f"{owner}: {name} must have 2 entries, got {betas}")
    for i, beta in enumerate(betas):
        check_unit_interval(f"{name}[{i}]", beta, owner)


def check_count(name: str, value: int, owner: str, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an integer >= {minimum}, got {value!r}")


def refuse_grad_scaler(grad_scaler: Any, owner: str) -> None:
    """A line search compares loss VALUES; a GradScaler-scaled loss (and its inf/NaN step skipping) breaks the test."""
    if grad_scaler is not None:
        raise ValueError(
            f"{owner}: grad_scaler is not supported — the Armijo test compares unscaled loss values and a "
            "GradScaler skips steps on overflow, which a line search cannot follow. Use bfloat16 autocast "
            "(no scaler) or float32, and return the float32 loss from the closure."
        )


# ---------------------------------------------------------------------------------------------------------------
# The closure protocol.


def takes_backwards_flag(closure: Callable[..., Any]) -> bool:
    """True for the seed's ``closure(backwards: bool)`` form, False for a plain no-argument closure."""
    try:
        parameters = inspect.signature(closure).parameters
    except (TypeError, ValueError):
        return False
    return "backwards" in parameters


class _RngState:
    """The CPU and (initialised) CUDA generator states, to replay one step's randomness (dropout)."""

    def __init__(self) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)


def _check_loss(loss: Any, owner: str) -> Tensor:
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise TypeError(f"{owner}: the closure must return the scalar loss tensor, got {type(loss).__name__}")
    if loss.dtype not in (torch.float32, torch.float64):
        raise TypeError(
            f"{owner}: the closure returned a {loss.dtype} loss; a line search needs the float32/float64 loss "
            "(compute the loss outside autocast, and never a GradScaler-scaled loss)"
        )
    return loss


class LossEvaluator:
    """Evaluates one step's closure: once with backward, then forward-only at trial points.

    Two closure forms are accepted:

    * the seed's ``closure(backwards: bool)``: ``backwards=True`` zero-grads, computes the loss, calls backward
      and returns it; ``backwards=False`` only computes the loss;
    * a plain ``closure()`` that only computes the loss (the ``sls`` package convention): the evaluator zero-grads
      and calls ``backward()`` itself on the first evaluation and runs trials under ``torch.no_grad()``.

    With ``replay_rng`` every evaluation starts from the RNG state seen by the first one, so dropout draws the same
    masks at every trial point; afterwards :meth:`finish` leaves the generators where one plain forward/backward
    would have left them (trials consume no randomness). The seed instead reseeded from the wall clock — not
    reproducible, and it clobbered the global RNG stream; deliberately not reproduced.
    """

    def __init__(self, closure: Callable[..., Any], zero_grad: Callable[[], None], owner: str,
                 replay_rng: bool = True) -> None:
        self._closure = closure
        self._seed_form = takes_backwards_flag(closure)
        self._zero_grad = zero_grad
        self._owner = owner
        self._start = _RngState() if replay_rng else None
        self._after_first: _RngState | None = None
        self.forwards = 0

    def with_backward(self) -> Tensor:
        with torch.enable_grad():
            if self._seed_form:
                loss = self._closure(backwards=True)
            else:
                self._zero_grad()
                loss = self._closure()
                _check_loss(loss, self._owner).backward()
        self.forwards += 1
        if self._start is not None:
            self._after_first = _RngState()
        return _check_loss(loss, self._owner).detach()

    @torch.no_grad()
    def forward_only(self) -> Tensor:
        if self._start is None:
            raise RuntimeError(f"{self._owner}: internal error — trial evaluations need replay_rng=True")
        self._start.restore()
        loss = self._closure(backwards=False) if self._seed_form else self._closure()
        self.forwards += 1
        return _check_loss(loss, self._owner).detach()

    def finish(self) -> None:
        if self._after_first is not None:
            self._after_first.restore()


# ---------------------------------------------------------------------------------------------------------------
# Cross-rank agreement.


def mean_over_ranks(values: Sequence[Tensor | float], device: torch.device) -> list[float]:
    """Average scalars over the data-parallel ranks (one collective) and bring them to the host (one sync).

    Every rank then holds the same numbers and takes the same accept/backtrack decision, so the replicas keep
    identical parameters and step sizes. The seed had no synchronisation: each rank compared its own batch's
    losses, accepted a different η, and the replicas drifted apart — deliberately not reproduced.
    """
    stacked = torch.stack([torch.as_tensor(v, device=device).detach().reshape(()).to(torch.float64)
                           for v in values])
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
        stacked /= dist.get_world_size()
    return stacked.tolist()


# ---------------------------------------------------------------------------------------------------------------
# The ray of trial points.


class ParameterRay:
    """Trial points ``p = p0 − η·d`` for a list of parameters.

    ``p0`` lives in buffers allocated on the first search and reused afterwards (the seed deep-copied every
    parameter, autograd metadata included, on every line-search step — deliberately not reproduced). Each trial
    writes ``p0`` then adds ``−η·d``, so a trial point does not depend on the trials before it.
    """

    def __init__(self) -> None:
        self._origin: list[Tensor] = []
        self._params: list[Tensor] = []
        self._directions: list[Tensor] = []

    @torch.no_grad()
    def start(self, params: list[Tensor], directions: list[Tensor]) -> None:
        if [(b.shape, b.dtype, b.device) for b in self._origin] != [(p.shape, p.dtype, p.device) for p in params]:
            self._origin = [torch.empty_like(p, memory_format=torch.preserve_format) for p in params]
        if params:
            torch._foreach_copy_(self._origin, params)  # multi-tensor: one call, not one per tensor
        self._params, self._directions = params, directions

    @torch.no_grad()
    def move_to(self, step_size: float, directions: list[Tensor] | None = None) -> None:
        """Set the parameters to ``p0 − step_size·d`` (``directions`` overrides the searched ``d``).

        Multi-tensor ops: the same arithmetic per tensor as ``p.copy_(p0); p.add_(d, alpha=-step_size)``."""
        if self._params:
            torch._foreach_copy_(self._params, self._origin)
            torch._foreach_add_(self._params, directions or self._directions, alpha=-step_size)

    def release(self) -> None:
        """Drop the references to this step's directions and parameters (the p0 buffers are kept)."""
        self._params, self._directions = [], []


# ---------------------------------------------------------------------------------------------------------------
# The backtracking loop.


@dataclass
class ArmijoResult:
    step_size: float       # the accepted step size; when not accepted, the last one tried
    accepted: bool         # False when max_tries trials all failed
    forwards: int          # trial evaluations (forward passes) spent
    backtracks: int        # step-size reductions
    avg_decrease: float    # the smoothed decrease D̄ after the search (unchanged unless the test accepted)


def backtracking_armijo(loss_at: Callable[[float], float], loss: float, slope: float, step_size: float, *,
                        c: float, backtrack: float, max_tries: int, smoothing: float = 0.0,
                        avg_decrease: float = 0.0, accept_equal_loss: bool = False) -> ArmijoResult:
    """Backtrack ``step_size`` until ``decrease ≥ c·step_size·slope``.

    ``loss_at(η)`` moves the parameters to the trial point and returns its loss (already agreed across ranks).
    ``decrease`` is ``loss − f`` when ``smoothing`` is 0 and the EMA ``smoothing·avg_decrease + (1−smoothing)·
    (loss − f)`` (SaLSA's D̄; ``slope`` is then the smoothed Ḡ) otherwise. ``accept_equal_loss`` accepts a trial
    whose loss equals the starting loss exactly without updating D̄ — SaLSA's guard against backtracking forever
    once the step is below the loss's resolution.
    """
    for trial in range(max_tries):
        raw = loss - loss_at(step_size)
        if accept_equal_loss and raw == 0.0:
            return ArmijoResult(step_size, True, trial + 1, trial, avg_decrease)
        decrease = avg_decrease * smoothing + raw * (1.0 - smoothing) if smoothing else raw
        if decrease >= step_size * c * slope:
            return ArmijoResult(step_size, True, trial + 1, trial, decrease if smoothing else avg_decrease)
        if trial + 1 < max_tries:
            step_size = step_size * backtrack
    return ArmijoResult(step_size, False, max_tries, max_tries - 1, avg_decrease)


class SearchStats:
    """Forward passes and backtracks: of the last step, and forwards per step since the previous report.

    Plain host integers (the search already synced to decide), so reporting never touches the device.
    """

    def __init__(self) -> None:
        self.forwards = self.backtracks = 0
        self.searched = False
        self._forwards_since, self._steps_since = 0, 0

    def record(self, forwards: int, backtracks: int, searched: bool) -> None:
        self.forwards, self.backtracks, self.searched = forwards, backtracks, searched
        self._forwards_since += forwards
        self._steps_since += 1

    def report(self) -> dict[str, float]:
        out = {
            "forwards": float(self.forwards),
            "backtracks": float(self.backtracks),
            "line_search": float(self.searched),
            "forwards_per_step": self._forwards_since / max(1, self._steps_since),
        }
        self._forwards_since, self._steps_since = 0, 0
        return out


# ---------------------------------------------------------------------------------------------------------------
# Directions searched along. Each rule keeps per-tensor statistics and proposes two directions (p ← p − η·d):
# ``search`` (built on the current gradient, a descent direction, with the slope ⟨g, d⟩ the Armijo test needs)
# and ``step`` (built on the momentum, used where no search happens). ``update_many`` / ``step_many`` are the
# multi-tensor forms of ``update`` / ``step`` (SaLSA's ``implementation="foreach"``): the same ops in the same
# order, one ``torch._foreach_*`` call per op and (device, dtype) bucket instead of one kernel per tensor.


def bias_correction(beta: float, step: int) -> float:
    """1 − β^max(1, step)."""
    return 1.0 - beta ** max(1, step)


class GlobalSearchState:
    """Mixin for line searches with one global state (step size, its EMAs) beside the per-parameter state,
    and per-group decoupled weight decay (checked for every group, also groups added later).

    It travels in ``state_dict()[SEARCH_KEY]`` as a plain dict of the dataclass ``SEARCH_STATE``.
    """

    SEARCH_KEY: str
    SEARCH_STATE: type
    _search: Any

    @property
    def step_size(self) -> float:
        return self._search.step_size

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)  # type: ignore[misc]
        wd = self.param_groups[-1]["weight_decay"]  # type: ignore[attr-defined]
        if not wd >= 0.0:
            raise ValueError(f"{type(self).__name__}: weight_decay must be >= 0, got {wd}")

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()  # type: ignore[misc]
        state[self.SEARCH_KEY] = asdict(self._search)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        search = state_dict.pop(self.SEARCH_KEY, None)
        if search is None:
            raise KeyError(f"{type(self).__name__}.load_state_dict: no {self.SEARCH_KEY!r} entry "
                           f"(not a {type(self).__name__} state dict)")
        super().load_state_dict(state_dict)  # type: ignore[misc]
        self._search = self.SEARCH_STATE(**search)


def device_dtype_groups(tensors: Sequence[Tensor]) -> list[list[int]]:
    """Indices of ``tensors`` grouped by (device, dtype), in order: a multi-tensor kernel's fast route needs one
    device and one dtype per call (mixed lists silently fall back to one kernel per tensor)."""
    return list(buckets([((t.device, t.dtype), i) for i, t in enumerate(tensors)]).values())


def per_bucket(fn: Callable[..., list[Tensor] | None], tensors: Sequence[Tensor], *others: Sequence[Any]
               ) -> list[Tensor]:
    """Call ``fn(tensors_b, *others_b)`` once per (device, dtype) bucket of ``tensors`` (``others`` are parallel
    lists, split the same way) and return its per-tensor results in the original order (Nones when ``fn``
    updates in place and returns None)."""
    out: list[Any] = [None] * len(tensors)
    for idx in device_dtype_groups(tensors):
        result = fn([tensors[i] for i in idx], *[[other[i] for i in idx] for other in others])
        if result is not None:
            for i, r in zip(idx, result):
                out[i] = r
    return out


def prepare_directions(optimizer: Optimizer, rule: Any, step_size: float, foreach: bool = False
                       ) -> tuple[list[Tensor], list[Tensor], list[dict[str, Any]]]:
    """Shared first phase of every line-search step: for each parameter with a gradient, apply the decoupled
    weight decay with the previous step size and update the direction rule's statistics. Returns the
    parameters, their gradients and their states, in param-group order.

    ``foreach`` runs the decay and the statistics as multi-tensor ops (:meth:`update_many`), bucketed by
    device and dtype — the same arithmetic, op for op, as the per-tensor reference (``rule.update``)."""
    params, grads, states = [], [], []
    for group in optimizer.param_groups:
        decayed = []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError(f"{type(optimizer).__name__} does not support sparse gradients")
            state = optimizer.state[p]
            if not state:
                rule.init_state(p, state)
            if group["weight_decay"] != 0.0:
                if foreach:
                    decayed.append(p)
                else:
                    p.mul_(1.0 - group["weight_decay"] * step_size)
            if not foreach:
                rule.update(state, p.grad)
            params.append(p)
            grads.append(p.grad)
            states.append(state)
        if decayed:
            factor = 1.0 - group["weight_decay"] * step_size
            per_bucket(lambda ps: torch._foreach_mul_(ps, factor), decayed)
    if foreach and params:
        rule.update_many(states, grads)
    return params, grads, states


def _stat(states: list[dict[str, Any]], key: str) -> list[Tensor]:
    return [state[key] for state in states]


def _ema_(averages: list[Tensor], values: list[Tensor], beta: float) -> None:
    """a ← β·a + ((1−β)·x), two rounded products and a sum — op for op the reference's ``mul_(β).add_(x·(1−β))``
    (``_foreach_lerp_`` or ``add_(alpha=)`` round differently and would break bit-for-bit seed equality)."""
    torch._foreach_mul_(averages, beta)
    scaled = torch._foreach_mul(values, 1.0 - beta)
    torch._foreach_add_(averages, scaled)


class AdamRule:
    """Adam statistics: m = β1·m + (1−β1)·g, v = β2·v + (1−β2)·g², P = 1/(√v̂ + eps).

    search: d = P·g, slope Σ g²·P ;  step: d = P·m̂.
    """

    state_keys = ("exp_avg", "exp_avg_sq")

    def __init__(self, betas: tuple[float, float], eps: float) -> None:
        self.beta1, self.beta2 = betas
        self.eps = eps

    def init_state(self, p: Tensor, state: dict[str, Any]) -> None:
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def update(self, state: dict[str, Any], g: Tensor) -> None:
        # (β·v) + ((1−β)·g²) as two rounded products and a sum, the seed's arithmetic (bit-for-bit comparable).
        state["exp_avg_sq"].mul_(self.beta2).add_(g.square().mul_(1.0 - self.beta2))
        state["exp_avg"].mul_(self.beta1).add_(g.mul(1.0 - self.beta1))

    def update_many(self, states: list[dict[str, Any]], grads: list[Tensor]) -> None:
        """:meth:`update` for many tensors, multi-tensor ops per (device, dtype) bucket (same bits)."""
        def bucket(gs: list[Tensor], ss: list[dict[str, Any]]) -> None:
            torch._foreach_mul_(_stat(ss, "exp_avg_sq"), self.beta2)
            squares = torch._foreach_mul(gs, gs)  # g·g is g.square()'s arithmetic
            torch._foreach_mul_(squares, 1.0 - self.beta2)
            torch._foreach_add_(_stat(ss, "exp_avg_sq"), squares)
            _ema_(_stat(ss, "exp_avg"), gs, self.beta1)
        per_bucket(bucket, grads, states)

    def step_many(self, states: list[dict[str, Any]], grads: list[Tensor], k: int) -> list[Tensor]:
        """:meth:`step` for many tensors: P·m̂ with multi-tensor ops per (device, dtype) bucket (same bits)."""
        def bucket(gs: list[Tensor], ss: list[dict[str, Any]]) -> list[Tensor]:
            precond = torch._foreach_div(_stat(ss, "exp_avg_sq"), bias_correction(self.beta2, k))
            torch._foreach_sqrt_(precond)
            torch._foreach_add_(precond, self.eps)
            torch._foreach_reciprocal_(precond)
            torch._foreach_mul_(precond, torch._foreach_div(_stat(ss, "exp_avg"), bias_correction(self.beta1, k)))
            return precond
        return per_bucket(bucket, grads, states)

    def _preconditioner(self, state: dict[str, Any], k: int) -> Tensor:
        v_hat = state["exp_avg_sq"] / bias_correction(self.beta2, k)
        return v_hat.sqrt_().add_(self.eps).reciprocal_()

    def search(self, state: dict[str, Any], g: Tensor, k: int) -> tuple[Tensor, Tensor]:
        precond = self._preconditioner(state, k)
        return precond * g, (g.square() * precond).sum()

    def step(self, state: dict[str, Any], g: Tensor, k: int) -> Tensor:
        return self._preconditioner(state, k) * (state["exp_avg"] / bias_correction(self.beta1, k))


class SgdRule:
    """SGD: search d = g, slope ‖g‖² ; step d = m̂ with m = β1·m + (1−β1)·g (d = g when β1 = 0)."""

    state_keys = ("exp_avg",)

    def __init__(self, betas: tuple[float, float], eps: float) -> None:
        self.beta1 = betas[0]

    def init_state(self, p: Tensor, state: dict[str, Any]) -> None:
        if self.beta1 > 0.0:
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def update(self, state: dict[str, Any], g: Tensor) -> None:
        if self.beta1 > 0.0:
            state["exp_avg"].mul_(self.beta1).add_(g.mul(1.0 - self.beta1))

    def update_many(self, states: list[dict[str, Any]], grads: list[Tensor]) -> None:
        if self.beta1 > 0.0:
            per_bucket(lambda gs, ss: _ema_(_stat(ss, "exp_avg"), gs, self.beta1), grads, states)

    def step_many(self, states: list[dict[str, Any]], grads: list[Tensor], k: int) -> list[Tensor]:
        if self.beta1 == 0.0:
            return [g.clone() for g in grads]
        correction = bias_correction(self.beta1, k)
        return per_bucket(lambda gs, ss: torch._foreach_div(_stat(ss, "exp_avg"), correction), grads, states)

    def search(self, state: dict[str, Any], g: Tensor, k: int) -> tuple[Tensor, Tensor]:
        return g.clone(), g.square().sum()

    def step(self, state: dict[str, Any], g: Tensor, k: int) -> Tensor:
        if self.beta1 == 0.0:
            return g.clone()
        return state["exp_avg"] / bias_correction(self.beta1, k)


class SignRule:
    """Sign (signSGD / Lion-like): search d = sign(g), slope ‖g‖₁ ; step d = sign(m), m = β1·m + (1−β1)·g."""

    state_keys = ("exp_avg",)

    def __init__(self, betas: tuple[float, float], eps: float) -> None:
        self.beta1 = betas[0]

    def init_state(self, p: Tensor, state: dict[str, Any]) -> None:
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def update(self, state: dict[str, Any], g: Tensor) -> None:
        state["exp_avg"].mul_(self.beta1).add_(g.mul(1.0 - self.beta1))

    def update_many(self, states: list[dict[str, Any]], grads: list[Tensor]) -> None:
        per_bucket(lambda gs, ss: _ema_(_stat(ss, "exp_avg"), gs, self.beta1), grads, states)

    def step_many(self, states: list[dict[str, Any]], grads: list[Tensor], k: int) -> list[Tensor]:
        return per_bucket(lambda gs, ss: torch._foreach_sign(_stat(ss, "exp_avg")), grads, states)

    def search(self, state: dict[str, Any], g: Tensor, k: int) -> tuple[Tensor, Tensor]:
        return g.sign(), g.abs().sum()

    def step(self, state: dict[str, Any], g: Tensor, k: int) -> Tensor:
        return state["exp_avg"].sign()


RULES: dict[str, type[AdamRule] | type[SgdRule] | type[SignRule]] = {
    "adam": AdamRule,
    "sgd": SgdRule,
    "sign": SignRule,
}
