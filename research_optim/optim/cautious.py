"""Cautious masking (Liang et al. 2024, arXiv 2411.16085) — one transform for every momentum optimizer.

Given a base optimizer that proposes an update direction ``u`` (so that ``p <- p - lr * u``), the cautious
rule keeps only the coordinates where ``u`` agrees in sign with the current gradient ``g``::

    mask = phi(u * g)            # elementwise
    p    = p - lr * (u * mask)   # decoupled weight decay is applied separately and is NEVER masked

The phi family below is selectable by name for the ablations. Every optimizer of the library accepts
``cautious=<phi name>`` (or ``None``) and applies :func:`cautious_direction` (or its multi-tensor twin, or
:func:`cautious_masked` inside a compiled step) to its direction — the transform lives here only. The number of
masked coordinates is accumulated on the device (no host sync) by :class:`MaskedFraction` and read only when the
training loop logs.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from research_optim.optim import checks
from research_optim.optim.sharded import replicated

__all__ = [
    "PHI_FUNCTIONS", "aligned", "cautious_mask", "cautious_masked", "cautious_direction", "cautious_directions",
    "check_phi", "mask_dtype", "number_kept", "MaskedFraction", "MaskedFractionMixin",
]


def _indicator_mean(aligned: Tensor, kept: Tensor, factor: float, dtype: torch.dtype = torch.float32) -> Tensor:
    """I(u·g>0) / max(mean(I), 1e-3) — current C-Optim C-AdamW and timm ``cadamw`` / ``clion``."""
    mean = kept.to(dtype) / aligned.numel()
    return aligned.to(dtype) * mean.clamp(min=1e-3).reciprocal()  # = I / mean, without a division per coordinate


def _indicator_ratio(aligned: Tensor, kept: Tensor, factor: float, dtype: torch.dtype = torch.float32) -> Tensor:
    """I(u·g>0) · numel / (ΣI + 1) — the paper's v1."""
    return aligned.to(dtype) * (aligned.numel() / (kept.to(dtype) + 1))


def _indicator(aligned: Tensor, kept: Tensor, factor: float, dtype: torch.dtype = torch.float32) -> Tensor:
    """I(u·g>0), no rescaling."""
    return aligned.to(dtype)


def _soft(aligned: Tensor, kept: Tensor, factor: float, dtype: torch.dtype = torch.float32) -> Tensor:
    """1 where aligned, ``cautious_factor`` elsewhere, divided by its mean — lion-pytorch ``cautious_factor``.

    factor 1 keeps everything (lion-pytorch skips caution then); factor 0 is ``indicator_mean`` with a 1e-5 clamp.
    """
    one = torch.ones((), dtype=dtype, device=aligned.device)
    scale = torch.where(aligned, one, one * float(factor))
    return scale / scale.mean().clamp(min=1e-5)


def _signxor(kept_mask: Tensor, kept: Tensor, factor: float, dtype: torch.dtype = torch.float32) -> Tensor:
    """HeavyBall: zero only where signs strictly disagree (exact zeros kept); rescale numel / max(kept, 1)."""
    return kept_mask.to(dtype) * (kept_mask.numel() / kept.to(dtype).clamp(min=1))


# phi(aligned, kept, cautious_factor, dtype) -> mask of ``aligned``'s shape, computed in ``dtype``. ``kept`` is the
# number of True coordinates of the boolean ``aligned`` (u·g > 0; u·g >= 0 for signxor) as an integer tensor: the
# one reduction a mask needs, counted exactly (sums of 0/1 in float32 are exact only below 2**24 coordinates, and a
# compiled float sum costs a cascade helper; an integer count runs at memory speed)
PhiFn = Callable[[Tensor, Tensor, float, torch.dtype], Tensor]

PHI_FUNCTIONS: dict[str, PhiFn] = {
    "indicator_mean": _indicator_mean,
    "indicator_ratio": _indicator_ratio,
    "indicator": _indicator,
    "soft": _soft,
    "signxor": _signxor,
}


def check_phi(owner: str, phi: str | None, cautious_factor: float = 0.0) -> None:
    """Raise a clear error for an unknown phi name or a soft factor outside [0, 1]."""
    checks.closed_unit_interval(owner, "cautious_factor", cautious_factor)
    if phi is not None and phi not in PHI_FUNCTIONS:
        raise ValueError(f"{owner}: cautious must name a phi, one of {sorted(PHI_FUNCTIONS)}, or be None; "
                         f"got {phi!r}")


def aligned(u: Tensor, g: Tensor, phi: str) -> Tensor:
    """Boolean tensor of the coordinates phi keeps at full weight."""
    return (u * g) >= 0 if phi == "signxor" else (u * g) > 0


def mask_dtype(dtype: torch.dtype) -> torch.dtype:
    """Precision the mask and its rescaling are computed in: the direction's own for float32/float64 (so a float64
    run matches a float64 reference to the last bits), float32 for half types (a mean over a large tensor in
    bfloat16 would be badly rounded)."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def number_kept(keep: Tensor) -> Tensor:
    """Number of True coordinates of a boolean tensor, as a 0-dim integer tensor on its device (int32 while it
    fits: an int64 count takes two vectors per vector of floats in a compiled CPU loop); of a sharded tensor, the
    whole tensor's count, replicated (φ divides it by numel once, not each rank's part)."""
    return replicated(keep.sum(dtype=torch.int32 if keep.numel() < 2**31 else torch.int64))


def cautious_mask(u: Tensor, g: Tensor, phi: str, cautious_factor: float = 0.0) -> Tensor:
    """The mask phi(u ∘ g) for one tensor (same shape as ``u``; float64 if ``u`` is, else float32)."""
    keep = aligned(u, g, phi)
    return PHI_FUNCTIONS[phi](keep, number_kept(keep), cautious_factor, mask_dtype(u.dtype))


def cautious_masked(u: Tensor, g: Tensor, phi: str, cautious_factor: float,
                    sign_of: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(u ∘ φ(u ∘ g), number of masked coordinates as a device tensor) — per tensor, also in compiled steps.

    ``sign_of``: a tensor with u's signs from which the alignment is cheaper to compute (Adam: m, since
    u = m̂ / (√v̂ + eps) has a positive denominator — timm ``cadamw`` masks with m·g too). Compiled, this keeps the
    preconditioner's sqrt and division out of the reduction pass that φ's mean needs (4× faster on CPU)."""
    keep = aligned(u if sign_of is None else sign_of, g, phi)
    kept = number_kept(keep)
    mask = PHI_FUNCTIONS[phi](keep, kept, cautious_factor, mask_dtype(u.dtype)).to(u.dtype)
    return u * mask, keep.numel() - kept.to(torch.int64)  # int64: the counter sums it over tensors and steps


def cautious_direction(u: Tensor, g: Tensor, phi: str | None, cautious_factor: float = 0.0,
                       counter: "MaskedFraction | None" = None, sign_of: Tensor | None = None) -> Tensor:
    """Return ``u ∘ phi(u ∘ g)`` (or ``u`` itself when ``phi`` is None), counting masked coordinates.

    Never modifies ``u`` or ``g`` in place, so ``u`` may be the gradient or a state buffer.
    """
    if phi is None:
        return u
    masked, count = cautious_masked(u, g, phi, cautious_factor, sign_of)
    if counter is not None:
        counter.add_count(count, u.numel())
    return masked


def cautious_directions(us: list[Tensor], gs: list[Tensor], phi: str | None, cautious_factor: float = 0.0,
                        counter: "MaskedFraction | None" = None,
                        signs_of: list[Tensor | None] | None = None) -> list[Tensor]:
    """:func:`cautious_direction` for many tensors (the multi-tensor twin: φ rescales by each tensor's own mean,
    so the mask is formed tensor by tensor)."""
    if phi is None:
        return us
    signs_of = signs_of or [None] * len(us)
    return [cautious_direction(u, g, phi, cautious_factor, counter, s) for u, g, s in zip(us, gs, signs_of)]


class MaskedFraction:
    """Fraction of coordinates the cautious mask zeroed (or down-weighted, for ``soft``) since the last reset.

    ``add_count`` accumulates the count on the device (no host sync); ``value`` / ``pop`` are the only host syncs
    and are meant for logging time. Optimizers report ``pop()`` from ``diagnostics()``, i.e. the fraction over all
    tensors and all steps since the previous log.
    """

    def __init__(self) -> None:
        self._masked: Tensor | None = None
        self._total = 0

    def reset(self) -> None:
        self._masked, self._total = None, 0

    def add_count(self, masked: Tensor, total: int) -> None:
        """Add ``masked`` (a device count) out of ``total`` coordinates."""
        self._masked = masked if self._masked is None else self._masked + masked
        self._total += total

    def value(self) -> float:
        """Masked fraction accumulated so far (0.0 before anything was counted)."""
        if self._masked is None or self._total == 0:
            return 0.0
        return float(self._masked) / self._total

    def pop(self) -> float:
        """``value()``, then ``reset()``."""
        fraction = self.value()
        self.reset()
        return fraction


class MaskedFractionMixin:
    """Base of the optimizers with per-group ``cautious``: ``self._masked``, the :class:`MaskedFraction` their steps
    count into, and its report. A diagnostic, not training state: unpickling starts a fresh counter."""

    param_groups: list[dict[str, Any]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._masked = MaskedFraction()
        super().__init__(*args, **kwargs)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)  # type: ignore[misc]
        self._masked = MaskedFraction()

    def _masked_fraction(self) -> dict[str, float]:
        """``masked_fraction`` over the steps since the previous call, when some group masks (a host sync)."""
        if not any(group["cautious"] is not None for group in self.param_groups):
            return {}
        return {"masked_fraction": self._masked.pop()}
