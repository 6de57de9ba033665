"""An update rule: what an optimizer proposes for one parameter — the direction u of ``p ← p − η·u``.

The optax shape, adapted to ``torch.optim``: a *rule* (Adam, Lion, heavy-ball momentum, Muon, Adafactor, ...)
keeps per-parameter state and proposes u; *transforms* act on u around it — the cautious mask (``cautious``),
decoupled weight decay (``direction``), the Schedule-Free averaging (``schedule_free_core``). An optimizer is a
rule plus transforms, so a rule written once serves every optimizer built on it, and every path of each:

* :meth:`Rule.direction` — one tensor, the readable reference; its hyperparameters come from :meth:`Rule.scalars`
  as numbers, or as 0-dim tensors when the same function is the body of a compiled step (write it
  with ``implementation.add_``/``addcmul_`` where a number would be passed as ``alpha=``/``value=``);
* :meth:`Rule.directions` — its multi-tensor twin (``torch._foreach_*``, op for op the same arithmetic).

Rules are stateless objects (their state lives in the optimizer's ``state[p]``), shared by every optimizer that
uses them; a variant matching a reference package's arithmetic bit for bit is a constructor argument of the
rule (e.g. ``AdamRule(order="schedulefree")``), not a copy.
"""
from __future__ import annotations

from typing import Any

from torch import Tensor

__all__ = ["Rule", "GradientRule", "GRADIENT"]


class Rule:
    """Base class of the update rules (see the module docstring).

    Class attributes a subclass sets:

    * ``buffers`` — the state tensors of one parameter (all of them, so a compiled step receives exactly these);
    * ``counts_steps`` — the rule needs the parameter's step count t (bias corrections); the optimizer keeps it;
    * ``paths`` — the implementations it has (see ``implementation``): ``"compiled"`` only where
      :meth:`direction` is written for 0-dim tensor hyperparameters, is elementwise apart from whole-tensor
      reductions (the compiled step passes flat 1-D views of p, g and the state) and its step size is the group's
      lr;
    * ``auto_compiled_min_numel`` — under ``implementation="auto"``, the smallest tensor of a compiled group that
      is compiled too; smaller ones take the foreach path (``"compiled"`` compiles every tensor it can).
    """

    buffers: tuple[str, ...] = ()
    counts_steps = False
    paths: tuple[str, ...] = ("reference", "foreach")
    auto_compiled_min_numel = 2

    def check(self, owner: str, group: dict[str, Any]) -> None:
        """Refuse bad hyperparameters of ``group`` (``research_optim.optim.checks``: the message names each)."""

    def init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        """Create the rule's buffers for ``p`` (called once, before its first step)."""

    def scalars(self, group: dict[str, Any], step: int) -> dict[str, Any]:
        """The numbers one step of ``group`` uses (``step``: the step count t ≥ 1 where ``counts_steps``)."""
        return {}

    def direction(self, p: Tensor, g: Tensor, state: dict[str, Any], s: dict[str, Any]) -> Tensor:
        """u for one tensor, updating the rule's state; may return a state buffer (then only read afterwards)."""
        raise NotImplementedError

    def directions(self, ps: list[Tensor], gs: list[Tensor], states: list[dict[str, Any]],
                   s: dict[str, Any]) -> list[Tensor]:
        """:meth:`direction` for tensors of one device and dtype, as multi-tensor ops (same arithmetic)."""
        raise NotImplementedError

    def sign_source(self, g: Tensor, state: dict[str, Any]) -> Tensor | None:
        """A tensor with u's signs that is cheaper for the cautious mask to read than u (None: u itself)."""
        return None

    def cautious_refusal(self, group: dict[str, Any]) -> str | None:
        """Why a cautious mask over this direction would mean nothing (u has g's sign everywhere, so the mask would
        only drop coordinates where g = 0), or None where it means something. Optimizers refuse ``cautious`` then."""
        return None

    def step_size(self, p: Tensor, u: Tensor, state: dict[str, Any], group: dict[str, Any]) -> float:
        """η of this tensor: the group's lr unless the rule scales it (per shape, per parameter norm)."""
        return group["lr"]


class GradientRule(Rule):
    """u = g, no state: the direction of plain gradient descent (Schedule-Free SGD's base)."""

    paths = ("reference", "foreach", "compiled")
    # u = g costs nothing eagerly: Schedule-Free SGD's foreach step is three ops, and on a model's small tensors
    # (biases, norms) it costs less host time than a compiled call per tensor (`python -m benchmarks.small_tensors`:
    # ViT-S/16 0.85× fused AdamW with every tensor compiled, 0.81× with the 101 under 65,536 elements on foreach)
    auto_compiled_min_numel = 1 << 16

    def direction(self, p: Tensor, g: Tensor, state: dict[str, Any], s: dict[str, Any]) -> Tensor:
        return g

    def directions(self, ps: list[Tensor], gs: list[Tensor], states: list[dict[str, Any]],
                   s: dict[str, Any]) -> list[Tensor]:
        return gs

    def cautious_refusal(self, group: dict[str, Any]) -> str | None:
        return ("u = g, so the mask would only drop coordinates where g = 0; mask a direction with momentum "
                "(lib_sgd with momentum, or sf_adamw with inner_momentum > 0)")


GRADIENT = GradientRule()
