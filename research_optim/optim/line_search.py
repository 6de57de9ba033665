"""Backtracking Armijo line search — the machinery SaLSA, SLS and Adam-SLS share.

Every line search here tries points on one ray ``p(η) = p0 − η·d`` and accepts the first step size that passes
the Armijo sufficient-decrease test (Armijo 1966; Vaswani et al. 2019, arXiv 1905.09997)::

    f(p0) − f(p0 − η·d)  ≥  c · η · ⟨g, d⟩            (backtrack η ← β_b·η until it holds)

SaLSA (Kenneweg et al. 2024, arXiv 2407.20650) smooths both sides with an EMA (rate β3)::

    D̄ ← β3·D̄ + (1−β3)·(f(p0) − f(p0 − η·d))      Ḡ ← β3·Ḡ + (1−β3)·⟨g, d⟩       test  D̄ ≥ c·η·Ḡ

This module holds, once: the closure protocol (:class:`LossEvaluator` — upstream's ``closure(backwards)`` form
and the plain no-argument form, with the RNG state replayed for every evaluation of a step), the ray of trial
points (:class:`ParameterRay`), the backtracking loop (:func:`backtracking_armijo`), the cross-rank mean of the
scalars the test compares (:func:`mean_over_ranks`) and the first phase of every step, decay and statistics
(:func:`prepare_directions`). The directions searched along are in ``search_directions``.
"""
from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
from torch import Tensor
from torch.optim import Optimizer

from research_optim import rng
from research_optim.optim import checks
from research_optim.optim.implementation import per_bucket

__all__ = [
    "LossEvaluator", "ParameterRay", "ArmijoResult", "backtracking_armijo", "mean_over_ranks", "takes_backwards_flag",
    "refuse_grad_scaler", "SearchStats", "GlobalSearchState", "prepare_directions",
]

# ---------------------------------------------------------------------------------------------------------------
# Refusals.


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
    """True for upstream's ``closure(backwards: bool)`` form, False for a plain no-argument closure."""
    try:
        parameters = inspect.signature(closure).parameters
    except (TypeError, ValueError):
        return False
    return "backwards" in parameters


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

    * upstream's ``closure(backwards: bool)``: ``backwards=True`` zero-grads, computes the loss, calls backward
      and returns it; ``backwards=False`` only computes the loss;
    * a plain ``closure()`` that only computes the loss (the ``sls`` package convention): the evaluator zero-grads
      and calls ``backward()`` itself on the first evaluation and runs trials under ``torch.no_grad()``.

    With ``replay_rng`` every evaluation starts from the RNG state seen by the first one, so dropout draws the same
    masks at every trial point; afterwards :meth:`finish` leaves the generators where one plain forward/backward
    would have left them (trials consume no randomness). Upstream instead reseeded from the wall clock — not
    reproducible, and it clobbered the global RNG stream; deliberately not reproduced.
    """

    def __init__(self, closure: Callable[..., Any], zero_grad: Callable[[], None], owner: str,
                 replay_rng: bool = True) -> None:
        self._closure = closure
        self._backwards_form = takes_backwards_flag(closure)
        self._zero_grad = zero_grad
        self._owner = owner
        self._start = rng.snapshot() if replay_rng else None
        self._after_first: dict[str, Any] | None = None
        self.forwards = 0

    def with_backward(self) -> Tensor:
        with torch.enable_grad():
            if self._backwards_form:
                loss = self._closure(backwards=True)
            else:
                self._zero_grad()
                loss = self._closure()
                _check_loss(loss, self._owner).backward()
        self.forwards += 1
        if self._start is not None:
            self._after_first = rng.snapshot()
        return _check_loss(loss, self._owner).detach()

    @torch.no_grad()
    def forward_only(self) -> Tensor:
        if self._start is None:
            raise RuntimeError(f"{self._owner}: internal error — trial evaluations need replay_rng=True")
        rng.restore(self._start)
        loss = self._closure(backwards=False) if self._backwards_form else self._closure()
        self.forwards += 1
        return _check_loss(loss, self._owner).detach()

    def finish(self) -> None:
        if self._after_first is not None:
            rng.restore(self._after_first)


# ---------------------------------------------------------------------------------------------------------------
# Cross-rank agreement.


def mean_over_ranks(values: Sequence[Tensor | float], device: torch.device) -> list[float]:
    """Average scalars over the data-parallel ranks (one collective) and bring them to the host (one sync).

    Every rank then holds the same numbers and takes the same accept/backtrack decision, so the replicas keep
    identical parameters and step sizes. Upstream had no synchronisation: each rank compared its own batch's
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

    ``p0`` lives in buffers allocated on the first search and reused afterwards (upstream deep-copied every
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


class GlobalSearchState:
    """Mixin for line searches with one global state (step size, its EMAs) beside the per-parameter state,
    and per-group decoupled weight decay (checked for every group, also groups added later, as the searched
    directions check the group's parameters).

    It travels in ``state_dict()[SEARCH_KEY]`` as a plain dict of the dataclass ``SEARCH_STATE``. Pickling (and
    ``copy.deepcopy``) keeps the whole object: the hyperparameters and the search state are attributes here, not
    param-group options, so ``Optimizer.__getstate__`` alone would drop them.
    """

    SEARCH_KEY: str
    SEARCH_STATE: type
    _search: Any
    directions: Any  # the searched directions (``search_directions``), set before Optimizer.__init__

    @property
    def step_size(self) -> float:
        return self._search.step_size

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)  # type: ignore[attr-defined]

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)  # type: ignore[misc]
        group = self.param_groups[-1]  # type: ignore[attr-defined]
        checks.non_negative(type(self).__name__, "weight_decay", group["weight_decay"])
        self.directions.check(type(self).__name__, group)

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


def prepare_directions(optimizer: Optimizer, directions: Any, step_size: float, foreach: bool = False,
                       upstream_decay: bool = False) -> tuple[list[Tensor], list[Tensor], list[dict[str, Any]]]:
    """Shared first phase of every line-search step: for each parameter with a gradient, apply the decoupled
    weight decay with the previous step size and update the statistics of the searched ``directions``. Returns the
    parameters, their gradients and their states, in param-group order.

    ``foreach`` runs the decay and the statistics as multi-tensor ops (:meth:`update_many`), bucketed by
    device and dtype — the same arithmetic, op for op, as the per-tensor reference (``directions.update``).

    The decay is p ← p·(1 − wd·η) on the parameters with a gradient (as torch's optimizers leave the others
    untouched). ``upstream_decay`` is the upstream SaLSA repository's instead (its compatibility mode): every
    parameter, with or without a gradient, as p ← p + (−wd·η)·p (``p.add_(p, alpha=…)``, which rounds differently)."""
    params, grads, states = [], [], []
    for group in optimizer.param_groups:
        decayed = []
        for p in group["params"]:
            if p.grad is None:
                if upstream_decay:
                    decayed.append(p)
                continue
            if p.grad.is_sparse:
                raise RuntimeError(f"{type(optimizer).__name__} does not support sparse gradients")
            state = optimizer.state[p]
            if not state:
                directions.init_state(p, state, group)
            decayed.append(p)
            if not foreach:
                directions.update(state, p.grad)
            params.append(p)
            grads.append(p.grad)
            states.append(state)
        if group["weight_decay"] != 0.0 and decayed:
            _decay(decayed, group["weight_decay"] * step_size, foreach, upstream_decay)
    if foreach and params:
        directions.update_many(states, grads)
    return params, grads, states


@torch.no_grad()
def _decay(params: list[Tensor], rate: float, foreach: bool, upstream: bool) -> None:
    """p ← p·(1 − rate), or upstream SaLSA's p ← p + (−rate)·p; per tensor or as multi-tensor ops (same arithmetic)."""
    if foreach:
        if upstream:
            per_bucket(lambda ps: torch._foreach_add_(ps, ps, alpha=-rate), params)
        else:
            per_bucket(lambda ps: torch._foreach_mul_(ps, 1.0 - rate), params)
        return
    for p in params:
        if upstream:
            p.add_(p, alpha=-rate)
        else:
            p.mul_(1.0 - rate)
