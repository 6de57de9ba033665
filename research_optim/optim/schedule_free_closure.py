"""Schedule-Free in closure form (``schedulefree``'s ``AdamWScheduleFreeClosure`` / ``SGDScheduleFreeClosure``).

``step(closure)`` works in either mode, and the mode says where the parameters are between steps:

* eval mode (a new optimizer's; the package's closure form): the parameters hold x — the point to evaluate and
  checkpoint — and no ``train()``/``eval()`` is ever needed. ``step(closure)`` moves them to the gradient point
  y = lerp(x, z, 1 − β), evaluates the closure there (loss and gradients), takes the Schedule-Free step and moves
  them back to x = lerp(y, z, 1 − 1/β);
* train mode (after ``train()``, which the training loop calls for every optimizer with modes): the parameters hold
  y, the closure is evaluated there and the step leaves them at the new y — so the loop's first evaluation, which it
  takes before ``step`` (its non-finite check) and hands over through the closure, is at the gradient point.

The arithmetic is the memory-efficient classes' (state z, and v for AdamW): an eval-mode step is ``train()``, the
train/eval class's step and ``eval()``, bit for bit. Verified against the package's closure classes (1.4.1), ours
driven by the loop's closure protocol (``protocols.optimizer_step``) and standalone.
"""
from __future__ import annotations

from typing import Any, Callable

from research_optim.optim.schedule_free import AdamWScheduleFree, SGDScheduleFree

__all__ = ["ClosureForm", "AdamWScheduleFreeClosure", "SGDScheduleFreeClosure"]


class ClosureForm:
    """Mixin before a memory-efficient Schedule-Free class: the closure form of it (see the module docstring)."""

    requires_closure = True

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        if closure is None:
            raise RuntimeError(f"{type(self).__name__}.step() needs a closure that computes the loss and its "
                               "gradients: the closure form evaluates it at y itself")
        if self.train_mode:  # type: ignore[attr-defined]
            return super().step(closure)  # type: ignore[misc]
        self.train()  # type: ignore[attr-defined]  # p: x → y
        try:
            return super().step(closure)  # type: ignore[misc]
        finally:
            self.eval()  # type: ignore[attr-defined]  # p: y → x


class AdamWScheduleFreeClosure(ClosureForm, AdamWScheduleFree):
    """Schedule-Free AdamW, closure form (state z, v). Arguments: see ``schedule_free.AdamWArguments``."""


class SGDScheduleFreeClosure(ClosureForm, SGDScheduleFree):
    """Schedule-Free SGD, closure form (state z). Arguments: see ``schedule_free.SGDArguments``."""
