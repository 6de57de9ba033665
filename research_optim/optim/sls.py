"""Line-search baselines: classic SLS (Vaswani et al. 2019, arXiv 1905.09997) and Adam-SLS.

Both search every step, with the plain (unsmoothed) Armijo test and a step size that is reset upward each step::

    η ← η · γ^(1/n_batches_per_epoch)                       # "reset option 1", γ = 2
    backtrack η ← β_b·η until  f(p) − f(p − η·d) ≥ c·η·⟨g, d⟩

* :class:`SLS`: d = g, so the test is f(p − η·g) ≤ f(p) − c·η·‖g‖²; c 0.1, β_b 0.9; the step is the accepted
  trial point p − η·g.
* :class:`AdamSLS` (upstream's ``salsa/adam_sls.py`` baseline, one group, ``smooth=False``, ``speed_up=False``):
  the test is along the preconditioned gradient d = P·g with P = 1/(√v̂ + eps); the step then moves from p along the
  momentum direction P·m̂ with the accepted η.

The Armijo loop, trial points, closure protocol and directions are shared with SaLSA
(``line_search``, ``search_directions``). Deliberate differences from upstream's ``adam_sls.py``: its guard (skip the
search when the loss is 0 or the slope < 1e-8) looks at an EMA of the slope (β 0.999) even with ``smooth=False``;
here it looks at this step's slope. Its per-group cycling and 6-step joint warm-up are not reproduced (one global
η). As in SaLSA: no parameter deep copy, the RNG is replayed rather than reseeded from the clock, losses and slope
are averaged over DDP ranks, and GradScaler is refused. When all ``max_tries`` trials fail, η is backtracked once
more and the step is taken with it (upstream's Adam-SLS does the same; the ``sls`` package steps by 1e-6).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer

from research_optim.optim import checks
from research_optim.optim.line_search import (
    GlobalSearchState,
    LossEvaluator,
    ParameterRay,
    SearchStats,
    backtracking_armijo,
    mean_over_ranks,
    prepare_directions,
    refuse_grad_scaler,
)
from research_optim.optim.search_directions import AdamDirections, SgdDirections

__all__ = ["SLS", "AdamSLS"]

_SLOPE_FLOOR = 1e-8


@dataclass
class _ResetState:
    step: int = 0
    step_size: float = 1.0


class _ResettingArmijo(GlobalSearchState, Optimizer):
    """Armijo line search every step with the step size reset upward by γ^(1/n_batches_per_epoch) first.

    Subclasses choose the searched directions and whether the step follows the searched direction or the momentum one.
    """

    SEARCH_KEY, SEARCH_STATE = "line_search", _ResetState
    requires_closure = True
    _step_along_momentum = False

    def __init__(self, params: Iterable[Any], directions: AdamDirections | SgdDirections, init_step_size: float,
                 c: float, backtrack: float, n_batches_per_epoch: int, reset_factor: float, max_tries: int,
                 weight_decay: float, grad_scaler: Any) -> None:
        owner = type(self).__name__
        refuse_grad_scaler(grad_scaler, owner)
        checks.positive(owner, "init_step_size", init_step_size)
        checks.open_unit_interval(owner, "c", c)
        checks.open_unit_interval(owner, "backtrack", backtrack)
        checks.integer(owner, "n_batches_per_epoch", n_batches_per_epoch, minimum=1)
        checks.at_least(owner, "reset_factor", reset_factor, 1.0)
        checks.integer(owner, "max_tries", max_tries, minimum=1)
        self.directions, self.c, self.backtrack, self.max_tries = directions, c, backtrack, max_tries
        self.n_batches_per_epoch, self.reset_factor = n_batches_per_epoch, reset_factor
        self._search = _ResetState(step_size=float(init_step_size))
        self._ray = ParameterRay()
        self._stats = SearchStats()
        super().__init__(params, {"weight_decay": weight_decay, "lr": float(init_step_size)})

    def step(self, closure: Callable[..., Tensor] | None = None) -> Tensor:  # type: ignore[override]
        if closure is None:
            raise RuntimeError(
                f"{type(self).__name__}.step() needs a closure: pass closure(backwards: bool) -> loss or "
                "closure() -> loss; the line search evaluates the loss at trial points itself."
            )
        s = self._search
        evaluator = LossEvaluator(closure, lambda: self.zero_grad(set_to_none=True), type(self).__name__)
        loss = evaluator.with_backward()
        s.step += 1
        with torch.no_grad():
            params, grads, states = self._prepare(s.step_size)
            step_size = s.step_size * self.reset_factor ** (1.0 / self.n_batches_per_epoch)
            directions, slope = [], 0
            for g, state in zip(grads, states):
                d, tensor_slope = self.directions.search(state, g, s.step)
                directions.append(d)
                slope = slope + tensor_slope
            device = params[0].device if params else loss.device
            loss_value, slope_value = mean_over_ranks([loss, slope], device)
            self._ray.start(params, directions)
            forwards = backtracks = 0
            if loss_value != 0.0 and slope_value >= _SLOPE_FLOOR:

                def loss_at(eta: float) -> float:
                    self._ray.move_to(eta)
                    return mean_over_ranks([evaluator.forward_only()], device)[0]

                result = backtracking_armijo(loss_at, loss_value, slope_value, step_size, c=self.c,
                                             backtrack=self.backtrack, max_tries=self.max_tries)
                step_size = result.step_size if result.accepted else result.step_size * self.backtrack
                forwards, backtracks = result.forwards, result.backtracks
                searched_point_is_final = result.accepted and not self._step_along_momentum
            else:
                searched_point_is_final = False
            if not searched_point_is_final:
                final = ([self.directions.step(state, g, s.step) for g, state in zip(grads, states)]
                         if self._step_along_momentum else None)
                self._ray.move_to(step_size, final)
            self._ray.release()
        evaluator.finish()
        s.step_size = step_size
        self._stats.record(1 + forwards, backtracks, True)
        for group in self.param_groups:
            group["lr"] = step_size
        return loss

    def _prepare(self, step_size: float) -> tuple[list[Tensor], list[Tensor], list[dict[str, Any]]]:
        return prepare_directions(self, self.directions, step_size)

    def diagnostics(self) -> dict[str, float]:
        """η, and forwards / backtracks of the last step (plus forwards per step since the previous call)."""
        return {"step_size": self._search.step_size, **self._stats.report()}


class SLS(_ResettingArmijo):
    """Classic SLS (Vaswani et al. 2019): SGD direction, Armijo f(p − η·g) ≤ f(p) − c·η·‖g‖² every step.

    Args: init_step_size (1.0), c (0.1), backtrack β_b (0.9), n_batches_per_epoch and reset_factor γ (2.0) of the
    per-step reset η ← η·γ^(1/n_batches_per_epoch), max_tries (100), weight_decay (decoupled, previous η).
    """

    def __init__(self, params: Iterable[Any], init_step_size: float = 1.0, c: float = 0.1, backtrack: float = 0.9,
                 n_batches_per_epoch: int = 500, reset_factor: float = 2.0, max_tries: int = 100,
                 weight_decay: float = 0.0, *, grad_scaler: Any = None) -> None:
        super().__init__(params, SgdDirections((0.0, 0.0), 0.0), init_step_size, c, backtrack, n_batches_per_epoch,
                         reset_factor, max_tries, weight_decay, grad_scaler)


class AdamSLS(_ResettingArmijo):
    """Adam-SLS: the Armijo test along P·g (slope Σ g²·P), then the step p − η·P·m̂; no smoothing.

    Defaults are upstream's ``adam_sls.py``: init_step_size 0.1, c 0.2, backtrack 0.9, γ 2, 500 batches per epoch,
    betas (0.9, 0.999), eps 1e-8, max_tries 200. Bias correction uses the textbook exponent t, as upstream does here.
    """

    _step_along_momentum = True

    def __init__(self, params: Iterable[Any], init_step_size: float = 0.1, c: float = 0.2,
                 betas: tuple[float, float] = (0.9, 0.999), weight_decay: float = 0.0, *, backtrack: float = 0.9,
                 n_batches_per_epoch: int = 500, reset_factor: float = 2.0, max_tries: int = 200, eps: float = 1e-8,
                 grad_scaler: Any = None) -> None:
        checks.betas(type(self).__name__, betas)
        checks.non_negative(type(self).__name__, "eps", eps)
        super().__init__(params, AdamDirections(tuple(betas), eps), init_step_size, c, backtrack, n_batches_per_epoch,
                         reset_factor, max_tries, weight_decay, grad_scaler)
