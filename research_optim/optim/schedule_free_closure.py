"""Schedule-Free in closure form (``schedulefree``'s ``AdamWScheduleFreeClosure`` / ``SGDScheduleFreeClosure``).

No ``train()``/``eval()`` to call: between steps the parameters hold x — the point to evaluate and checkpoint —
and ``step(closure)`` moves them to the gradient point y = lerp(x, z, 1 − β), evaluates the closure there (loss and
gradients), takes the Schedule-Free step and moves them back to x = lerp(y, z, 1 − 1/β). The arithmetic between is
the memory-efficient classes' (state z, and v for AdamW), so a closure-form run is the train/eval form's run with
``eval()`` after every step.

The training loop drives it through its closure protocol (``requires_closure``; ``protocols.optimizer_step``):
its closure zero-grads, computes the loss, calls backward (and clips), and every call sees the same batch and
random state. ``train()``/``eval()`` exist and do nothing (the parameters are always at x between steps), so the
loop's evaluation — with BatchNorm statistics recomputed at x — works unchanged. Verified against the package's
closure classes (1.4.1) through the loop's closure protocol.
"""
from __future__ import annotations

from typing import Any, Callable

from research_optim.optim.schedule_free import AdamWScheduleFree, SGDScheduleFree

__all__ = ["ClosureForm", "AdamWScheduleFreeClosure", "SGDScheduleFreeClosure"]


class ClosureForm:
    """Mixin before a memory-efficient Schedule-Free class: the closure form of it (see the module docstring)."""

    requires_closure = True

    def train(self) -> None:
        """Nothing to do: the parameters hold x between steps; ``step`` moves them to y and back itself."""

    def eval(self) -> None:
        """Nothing to do: the parameters hold x between steps."""

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        if closure is None:
            raise RuntimeError(f"{type(self).__name__}.step() needs a closure that computes the loss and its "
                               "gradients: the closure form moves the parameters to y and evaluates it there")
        super().train()  # type: ignore[misc]  # p: x → y
        try:
            return super().step(closure)  # type: ignore[misc]
        finally:
            super().eval()  # type: ignore[misc]  # p: y → x


class AdamWScheduleFreeClosure(ClosureForm, AdamWScheduleFree):
    """Schedule-Free AdamW, closure form (state z, v). Arguments: see ``schedule_free.AdamWArguments``."""


class SGDScheduleFreeClosure(ClosureForm, SGDScheduleFree):
    """Schedule-Free SGD, closure form (state z). Arguments: see ``schedule_free.SGDArguments``."""
