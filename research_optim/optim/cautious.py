"""Cautious masking (Liang et al. 2024, arXiv 2411.16085) — one transform for every momentum optimizer.

Given a base optimizer that proposes an update direction ``u`` (so that ``p <- p - lr * u``), the cautious
rule keeps only the coordinates where ``u`` agrees in sign with the current gradient ``g``::

    mask = phi(u * g)            # elementwise
    p    = p - lr * (u * mask)   # decoupled weight decay is applied separately and is NEVER masked

The phi family below is selectable by name for the ablations. Every optimizer of the library accepts
``cautious=<phi name>`` (or ``None``) and calls :func:`cautious_direction` on its direction — the rule lives
here only. The number of masked coordinates is accumulated on the device (no host sync) by
:class:`MaskedFraction` and read only when the training loop logs.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

__all__ = ["PHI_FUNCTIONS", "aligned", "cautious_mask", "cautious_direction", "check_phi", "MaskedFraction"]


def _indicator_mean(aligned: Tensor, factor: float) -> Tensor:
    """I(u·g>0) / max(mean(I), 1e-3) — current C-Optim C-AdamW and timm."""
    mask = aligned.to(torch.float32)
    return mask / mask.mean().clamp(min=1e-3)


def _indicator_ratio(aligned: Tensor, factor: float) -> Tensor:
    """I(u·g>0) · numel / (ΣI + 1) — the paper's v1."""
    mask = aligned.to(torch.float32)
    return mask * (mask.numel() / (mask.sum() + 1))


def _indicator(aligned: Tensor, factor: float) -> Tensor:
    """I(u·g>0), no rescaling."""
    return aligned.to(torch.float32)


def _soft(aligned: Tensor, factor: float) -> Tensor:
    """1 where aligned, ``cautious_factor`` elsewhere, divided by its mean — lion-pytorch ``cautious_factor``."""
    scale = torch.where(aligned, 1.0, float(factor))
    return scale / scale.mean().clamp(min=1e-5)


def _signxor(kept: Tensor, factor: float) -> Tensor:
    """HeavyBall: zero only where signs strictly disagree (exact zeros kept); rescale numel / max(kept, 1)."""
    return kept.to(torch.float32) * (kept.numel() / kept.sum().clamp(min=1))


PhiFn = Callable[[Tensor, float], Tensor]

# name -> phi applied to the boolean "aligned" tensor (u·g > 0; u·g >= 0 for signxor)
PHI_FUNCTIONS: dict[str, PhiFn] = {
    "indicator_mean": _indicator_mean,
    "indicator_ratio": _indicator_ratio,
    "indicator": _indicator,
    "soft": _soft,
    "signxor": _signxor,
}


def check_phi(phi: str | None, cautious_factor: float = 0.0) -> None:
    """Raise a clear error for an unknown phi name or a soft factor outside [0, 1]."""
    if phi is None:
        return
    if phi not in PHI_FUNCTIONS:
        raise ValueError(f"cautious: unknown phi {phi!r}; choose one of {sorted(PHI_FUNCTIONS)} or None")
    if not 0.0 <= cautious_factor <= 1.0:
        raise ValueError(f"cautious_factor must be in [0, 1], got {cautious_factor}")


def aligned(u: Tensor, g: Tensor, phi: str) -> Tensor:
    """Boolean tensor of the coordinates phi keeps at full weight."""
    return (u * g) >= 0 if phi == "signxor" else (u * g) > 0


def cautious_mask(u: Tensor, g: Tensor, phi: str, cautious_factor: float = 0.0) -> Tensor:
    """The float32 mask phi(u ∘ g) for one tensor (same shape as ``u``)."""
    return PHI_FUNCTIONS[phi](aligned(u, g, phi), cautious_factor)


def cautious_direction(
    u: Tensor, g: Tensor, phi: str | None, cautious_factor: float = 0.0, counter: "MaskedFraction | None" = None
) -> Tensor:
    """Return ``u ∘ phi(u ∘ g)`` (or ``u`` unchanged when ``phi`` is None), counting masked coordinates."""
    if phi is None:
        return u
    keep = aligned(u, g, phi)
    if counter is not None:
        counter.add(keep)
    return u * PHI_FUNCTIONS[phi](keep, cautious_factor).to(u.dtype)


class MaskedFraction:
    """Fraction of coordinates the cautious mask zeroed (or down-weighted, for ``soft``) in the last step.

    Accumulates on the device; ``value()`` is the only host sync and is called at logging time.
    """

    def __init__(self) -> None:
        self._masked: Tensor | None = None
        self._total = 0

    def reset(self) -> None:
        self._masked, self._total = None, 0

    def add(self, keep: Tensor) -> None:
        masked = keep.numel() - keep.sum()
        self._masked = masked if self._masked is None else self._masked + masked
        self._total += keep.numel()

    def value(self) -> float:
        if self._masked is None or self._total == 0:
            return 0.0
        return float(self._masked) / self._total
