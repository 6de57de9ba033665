"""SaLSA — Stable Armijo Line Search Adaptation (Kenneweg et al., IJCNN 2024, arXiv 2407.20650).

One global step size η, Adam statistics and a smoothed Armijo test (t counts steps from 1)::

    loss = f(p), g = ∇f(p)                              # the step's one forward + backward
    p ← p − wd·η·p                                      # decoupled decay with the previous η
    m ← β1·m + (1−β1)·g ;  v ← β2·v + (1−β2)·g² ;  P = 1/(√v̂ + eps)
    η_try = growth·η
    L = min(cadence_cap, 1/(|η_fast/η_slow − 1| + 1e-8))   # line-search cadence
    since_ls += 1
    if t < search_warmup or since_ls ≥ L or not speed_up:  # line-search step, d = P·g
        Ḡ ← β3·Ḡ + (1−β3)·⟨g, d⟩
        backtrack η_try ← backtrack·η_try until  D̄_try ≥ c·η_try·Ḡ,
            D̄_try = β3·D̄ + (1−β3)·(loss − f(p − η_try·d));  then D̄ ← D̄_try, p ← p − η_try·d
        η ← η_try ; η_fast ← lerp(η, η_fast, 0.9) ; η_slow ← lerp(η, η_slow, 0.99) ; since_ls ← 0
    else:                                               # speed-up step: no search, no extra forward
        p ← p − η_try·P·m̂                               # η itself is unchanged

``use_mv`` searches along the step direction (P·m̂, slope ⟨g, P·m̂⟩) instead of P·g, as upstream's option of that
name (its docstring recommends it). Variants search along other directions (``direction="sgd"``: d = g / m̂;
``"sign"``: sign(g) / sign(m); ``"muon"``: orthogonalised g / Nesterov momentum for the matrices, Adam for the rest;
``search_directions``) and may mask the direction with a cautious φ (``research_optim.optim.cautious``).

Two upstream versions exist: ``salsa-optimizer`` 0.1.0 on PyPI and the repository's newer ``SaLSA.py``
(TheMody/No-learning-rates-needed-Introducing-SALSA-Stable-Armijo-Line-Search-Adaptation at 717b41c, the file last
changed in e00c048), which adds decoupled weight decay — applied to every parameter, also one without a gradient —
and searches only while ``loss ≥ 1e-8`` (0.1.0: ``loss ≠ 0``). ``compat`` reproduces either bit for bit
(:data:`COMPAT`); the default takes the ``loss ≥ 1e-8`` guard (a loss below 1e-8 is not searched: the step is
taken at η_try) and refuses a negative loss (which would never be searched while η grows), and decays only
parameters with a gradient, as torch's optimizers.

Deliberate differences from both upstream versions:

* no deep copy of all parameters per line-search step: ``p0`` lives in buffers allocated once (:class:`ParameterRay`);
* no host sync on speed-up steps: the search decision depends only on host counters, and upstream's per-step NaN
  check (``torch.isnan(params[0][0])``) and ``loss.item()`` are gone; syncs happen only on line-search steps;
* bias correction uses the textbook exponent t; upstream divides by 1 − β^(t+1) (its step counter is already
  incremented when it adds one) — ``compat`` restores it;
* DDP: the loss values and the slope are averaged over ranks (:func:`mean_over_ranks`), so every rank takes the
  same decision; upstream compared per-rank losses and the replicas drifted apart;
* param groups (per-group ``weight_decay``; η is global); upstream has a single group (and 0.1.0 no decay);
* the dropout randomness is replayed from a saved RNG state instead of reseeding from the wall clock;
* GradScaler is refused (``grad_scaler=`` raises; a non-float32/64 loss raises);
* when the loss guard or Ḡ < 1e-8 skips the search, upstream steps along the momentum direction and then evaluates
  the loss once more, unused — that forward is skipped here (the parameters are the same);
* when all ``max_tries`` trials fail, the parameters are at the last trial point and η is that trial's step size
  (upstream keeps the parameters there but records η one more backtrack smaller — ``compat`` restores it);
* the Armijo test runs in float64 host arithmetic; upstream keeps D̄ and Ḡ as default-dtype tensors.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer

from research_optim.optim import checks
from research_optim.optim.cautious import MaskedFractionMixin, cautious_direction, cautious_directions, check_phi
from research_optim.optim.implementation import check_implementation
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
from research_optim.optim.search_directions import DIRECTIONS

__all__ = ["SaLSA", "COMPAT"]

# "foreach": the direction statistics and step directions as multi-tensor ops (``update_many`` / ``step_many``),
# op for op the reference's arithmetic; "reference": one tensor at a time; "auto": foreach. SaLSA has no compiled
# path: its per-step cost is Python overhead and trial forwards, not memory traffic.
PATHS = ("reference", "foreach")

_SLOPE_FLOOR = 1e-8       # below this smoothed slope upstream does not search (the test would be meaningless)
_STEP_SIZE_EMA_INIT = 1e-8  # upstream's starting value of both step-size EMAs (ratio 1 → cadence at its cap)
_LOSS_FLOOR = 1e-8        # below this loss the upstream repository (and the default) does not search

# compat value → what it reproduces. Both: bias-correction exponent t+1, η one backtrack below an exhausted search.
COMPAT = {
    "0.1.0": "salsa-optimizer 0.1.0 (PyPI): searches while loss != 0; no weight decay",
    "717b41c": "the upstream repository's SaLSA.py at commit 717b41c5a81949455f85479ed918e2b923a2e40a: searches "
               "while loss >= 1e-8; decays every parameter (also without a gradient) as p.add_(p, alpha=-wd*eta)",
}


@dataclass
class _SearchState:
    """Global (not per-parameter) state of the step-size controller; saved under ``state_dict()["salsa"]``."""

    step: int = 0
    step_size: float = 1.0
    avg_decrease: float = 0.0      # D̄
    avg_slope: float = 0.0         # Ḡ
    step_size_fast: float = _STEP_SIZE_EMA_INIT
    step_size_slow: float = _STEP_SIZE_EMA_INIT
    since_search: int = 100        # upstream's starting value: the first step past the warmup searches


class SaLSA(GlobalSearchState, MaskedFractionMixin, Optimizer):
    """SaLSA: Adam (or SGD / sign / Muon) directions with one global step size set by a smoothed Armijo line search.

    Args:
        params: parameters or param groups (a group may set its own ``weight_decay``).
        init_step_size: initial η (upstream's 1.0; it grows by ``growth`` per step, so "a bit high" is fine).
        c: Armijo constant in (0, 1) (the paper used 0.3; upstream defaults to 0.5; 0.7 was needed for Mamba).
        betas: (β1, β2) of the Adam statistics.
        weight_decay: decoupled decay p ← p − wd·η·p, applied with the previous η before the step.
        beta3: EMA rate of the smoothed decrease D̄ and slope Ḡ.
        growth: η_try = growth·η at every step.
        backtrack: factor applied to η_try after a failed trial.
        max_tries: trials per line search.
        cadence_cap: upper bound of the line-search cadence L.
        search_warmup: every step t < search_warmup searches.
        step_size_ema: (fast, slow) EMA rates of η that set the cadence.
        speed_up: skip searches between cadence points; False searches every step.
        eps: added to √v̂ in the preconditioner.
        direction: ``"adam"`` (SaLSA), ``"sgd"``, ``"sign"`` or ``"muon"``.
        cautious, cautious_factor: φ name of ``cautious.PHI_FUNCTIONS`` (or None) masking the direction.
        use_mv: search along the step direction (momentum) rather than the gradient's, as upstream's ``use_mv``.
        compat: None, or a key of :data:`COMPAT` — reproduce that upstream version's arithmetic bit for bit
            (``"0.1.0"``: ``salsa.SaLSA`` of salsa-optimizer 0.1.0, which has no weight decay, so a nonzero
            ``weight_decay`` is refused; ``"717b41c"``: the upstream repository's newest ``SaLSA.py``).
        implementation: ``"auto"`` (= ``"foreach"``) | ``"foreach"`` | ``"reference"``: the decay, the direction
            statistics and the speed-up step's direction as multi-tensor ops per (device, dtype) bucket, or one
            tensor at a time (the readable reference). Same arithmetic op for op (bit-identical on CPU), same state.
        grad_scaler: must be None — AMP GradScaler is refused (see :func:`refuse_grad_scaler`).

    ``step(closure)`` requires a closure: upstream's ``closure(backwards: bool)`` or a plain ``closure()`` that
    returns the loss (see :class:`~research_optim.optim.line_search.LossEvaluator`). Each group's ``lr`` is a
    read-only mirror of η for loggers; LR schedules do not apply (use the constant schedule).
    """

    SEARCH_KEY, SEARCH_STATE = "salsa", _SearchState
    paths = PATHS
    requires_closure = True

    def __init__(
        self,
        params: Iterable[Any],
        init_step_size: float = 1.0,
        c: float = 0.5,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        *,
        beta3: float = 0.9,
        growth: float = 1.1,
        backtrack: float = 0.8,
        max_tries: int = 100,
        cadence_cap: float = 10.0,
        search_warmup: int = 10,
        step_size_ema: tuple[float, float] = (0.9, 0.99),
        speed_up: bool = True,
        eps: float = 1e-8,
        direction: str = "adam",
        cautious: str | None = None,
        cautious_factor: float = 0.0,
        use_mv: bool = False,
        compat: str | None = None,
        grad_scaler: Any = None,
        implementation: str = "auto",
    ) -> None:
        owner = type(self).__name__
        check_implementation(owner, implementation, PATHS)
        refuse_grad_scaler(grad_scaler, owner)
        checks.positive(owner, "init_step_size", init_step_size)
        checks.open_unit_interval(owner, "c", c)
        checks.betas(owner, betas)
        checks.unit_interval(owner, "beta3", beta3)
        checks.at_least(owner, "growth", growth, 1.0)
        checks.open_unit_interval(owner, "backtrack", backtrack)
        checks.integer(owner, "max_tries", max_tries, minimum=1)
        checks.at_least(owner, "cadence_cap", cadence_cap, 1.0)
        checks.integer(owner, "search_warmup", search_warmup)
        checks.betas(owner, step_size_ema, name="step_size_ema")
        checks.boolean(owner, "speed_up", speed_up)
        checks.non_negative(owner, "eps", eps)
        checks.choice(owner, "direction", direction, sorted(DIRECTIONS))
        check_phi(owner, cautious, cautious_factor)
        checks.boolean(owner, "use_mv", use_mv)
        if compat is not None:
            checks.choice(owner, "compat", compat, sorted(COMPAT))

        self.c, self.beta3, self.growth, self.backtrack = c, beta3, growth, backtrack
        self.max_tries, self.cadence_cap, self.search_warmup = max_tries, cadence_cap, search_warmup
        self.step_size_ema, self.speed_up, self.use_mv, self.compat = tuple(step_size_ema), speed_up, use_mv, compat
        self.direction, self.cautious, self.cautious_factor = direction, cautious, cautious_factor
        self.directions = DIRECTIONS[direction](tuple(betas), eps)
        # an attribute, not a group option: state_dicts stay identical across implementations
        self.implementation = implementation
        self._search = _SearchState(step_size=float(init_step_size))
        self._ray = ParameterRay()
        self._stats = SearchStats()
        super().__init__(params, {"weight_decay": weight_decay, "lr": float(init_step_size)})

    # -- the step ---------------------------------------------------------------------------------------------
    def cadence(self) -> float:
        """L = min(cadence_cap, 1/(|η_fast/η_slow − 1| + 1e-8)), with |·| as upstream's max(r, 1/r)."""
        ratio = self._search.step_size_fast / self._search.step_size_slow
        if ratio < 1.0:
            ratio = 1.0 / ratio
        return min(self.cadence_cap, 1.0 / ((ratio - 1.0) + 1e-8))

    def step(self, closure: Callable[..., Tensor] | None = None) -> Tensor:  # type: ignore[override]
        if closure is None:
            raise RuntimeError(
                f"{type(self).__name__}.step() needs a closure: pass closure(backwards: bool) -> loss (upstream's "
                "form) or closure() -> loss; the line search evaluates the loss at trial points itself."
            )
        s = self._search
        cadence = self.cadence()
        s.since_search += 1
        t = s.step + 1
        # Host-side decision only: speed-up steps never wait for the device (upstream synced on every step).
        search = not self.speed_up or t < self.search_warmup or s.since_search >= cadence
        evaluator = LossEvaluator(closure, lambda: self.zero_grad(set_to_none=True), type(self).__name__,
                                  replay_rng=search)
        loss = evaluator.with_backward()
        s.step = t
        # Upstream's bias-correction exponent is t+1 (it adds one to an already incremented counter).
        k = t if self.compat is None else t + 1
        self._masked.reset()
        with torch.no_grad():
            params, grads, states = self._prepare(s.step_size)
            if search:
                forwards, backtracks = self._line_search(params, grads, states, k, loss, evaluator)
            else:
                self._take_step(params, self._step_directions(grads, states, k), s.step_size * self.growth)
                forwards, backtracks = 0, 0
        evaluator.finish()
        self._stats.record(1 + forwards, backtracks, search)
        for group in self.param_groups:
            group["lr"] = s.step_size
        return loss

    @property
    def _foreach(self) -> bool:
        return self.implementation != "reference"

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        if self.compat == "0.1.0" and self.param_groups[-1]["weight_decay"] != 0.0:
            raise ValueError(f"{type(self).__name__}: weight_decay={self.param_groups[-1]['weight_decay']} with "
                             "compat='0.1.0' — salsa-optimizer 0.1.0 has no weight decay; use compat='717b41c' "
                             "(the upstream repository's decay) or compat=None")

    def _prepare(self, step_size: float) -> tuple[list[Tensor], list[Tensor], list[dict[str, Any]]]:
        return prepare_directions(self, self.directions, step_size, foreach=self._foreach,
                                  upstream_decay=self.compat == "717b41c")

    def _searches_at(self, loss: float) -> bool:
        """The loss guard: upstream 0.1.0 searches at any nonzero loss, the newer upstream (and here) at ≥ 1e-8."""
        return loss != 0.0 if self.compat == "0.1.0" else loss >= _LOSS_FLOOR

    def _mask(self, d: Tensor, g: Tensor) -> Tensor:
        return cautious_direction(d, g, self.cautious, self.cautious_factor, self._masked)

    def _step_directions(self, grads: list[Tensor], states: list[dict[str, Any]], k: int) -> list[Tensor]:
        if self._foreach:
            directions = self.directions.step_many(states, grads, k)
        else:
            directions = [self.directions.step(state, g, k) for g, state in zip(grads, states)]
        return cautious_directions(directions, grads, self.cautious, self.cautious_factor, self._masked)

    @staticmethod
    def _take_step(params: list[Tensor], directions: list[Tensor], step_size: float) -> None:
        """p ← p − η·d for every tensor, as one multi-tensor op (per tensor: ``p.add_(d, alpha=-η)``)."""
        if params:
            torch._foreach_add_(params, directions, alpha=-step_size)

    def _line_search(self, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]], k: int,
                     loss: Tensor, evaluator: LossEvaluator) -> tuple[int, int]:
        s = self._search
        directions, slope = [], 0  # summed tensor by tensor, in parameter order (upstream's summation order)
        for g, state in zip(grads, states):
            if self.use_mv:
                d = self.directions.step(state, g, k)
            else:
                d, tensor_slope = self.directions.search(state, g, k)
            if self.cautious is not None:
                d = self._mask(d, g)
            if self.use_mv or self.cautious is not None:
                tensor_slope = torch.inner(g.flatten(), d.flatten())  # ⟨g, d⟩ as upstream's use_mv computes it
            directions.append(d)
            slope = slope + tensor_slope
        device = params[0].device if params else loss.device
        loss_value, slope_value = mean_over_ranks([loss, slope], device)
        if loss_value < 0.0 and self.compat is None:
            raise ValueError(
                f"{type(self).__name__}: the loss is negative ({loss_value:.6g}); below the guard loss ≥ 1e-8 the line "
                "search never runs and η grows by `growth` at every search step. SaLSA needs a non-negative loss: "
                "add a constant (compat= reproduces upstream, which does not check)")
        s.avg_slope = s.avg_slope * self.beta3 + slope_value * (1.0 - self.beta3)
        s.since_search = 0
        step_size = s.step_size * self.growth
        forwards = backtracks = 0
        if self._searches_at(loss_value) and s.avg_slope >= _SLOPE_FLOOR:
            self._ray.start(params, directions)

            def loss_at(eta: float) -> float:
                self._ray.move_to(eta)
                return mean_over_ranks([evaluator.forward_only()], device)[0]

            result = backtracking_armijo(
                loss_at, loss_value, s.avg_slope, step_size, c=self.c, backtrack=self.backtrack,
                max_tries=self.max_tries, smoothing=self.beta3, avg_decrease=s.avg_decrease, accept_equal_loss=True,
            )
            self._ray.release()
            s.avg_decrease = result.avg_decrease
            step_size = result.step_size
            if not result.accepted and self.compat is not None:
                step_size = step_size * self.backtrack
            forwards, backtracks = result.forwards, result.backtracks
        else:
            self._take_step(params, self._step_directions(grads, states, k), step_size)
        s.step_size = step_size
        fast, slow = self.step_size_ema
        s.step_size_slow = s.step_size_slow * slow + step_size * (1.0 - slow)
        s.step_size_fast = s.step_size_fast * fast + step_size * (1.0 - fast)
        return forwards, backtracks

    # -- state and diagnostics ---------------------------------------------------------------------------------
    def diagnostics(self) -> dict[str, float]:
        """η, cadence L, forwards/backtracks of the last step, whether it searched, mean forwards per step since
        the previous call (the line search's compute overhead) and, with caution on, the masked fraction."""
        out = {"step_size": self._search.step_size, "cadence": self.cadence(), **self._stats.report()}
        if self.cautious is not None:
            out["masked_fraction"] = self._masked.value()
        return out
