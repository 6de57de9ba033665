"""Hyperparameter checks shared by every optimizer of the library.

Constructors are the single source of truth for what a value may be: each check raises ``ValueError`` naming
the optimizer, the argument and what is allowed, e.g. ``Lion: betas[1] must be in [0, 1), got 1.0``. Param
groups are checked too (a group's own ``lr=-1`` is refused the same way). NaN fails every range check.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

__all__ = [
    "positive", "non_negative", "at_least", "at_most", "unit_interval", "open_unit_interval", "closed_unit_interval",
    "integer", "boolean", "sequence", "betas", "choice", "finite",
]


def _fail(owner: str, name: str, rule: str, value: Any) -> None:
    raise ValueError(f"{owner}: {name} must be {rule}, got {value!r}")


def _number(owner: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(owner, name, "a number", value)
    return float(value)


def finite(owner: str, name: str, value: Any) -> None:
    if not math.isfinite(_number(owner, name, value)):
        _fail(owner, name, "finite", value)


def positive(owner: str, name: str, value: Any) -> None:
    """``value`` > 0 and finite — learning rates, initial step sizes."""
    v = _number(owner, name, value)
    if not (v > 0.0 and math.isfinite(v)):
        _fail(owner, name, "> 0", value)


def non_negative(owner: str, name: str, value: Any) -> None:
    """``value`` ≥ 0 and finite — weight decay, eps, averaging powers."""
    v = _number(owner, name, value)
    if not (v >= 0.0 and math.isfinite(v)):
        _fail(owner, name, ">= 0", value)


def at_least(owner: str, name: str, value: Any, minimum: float) -> None:
    """``value`` ≥ ``minimum`` and finite — growth factors, clipping thresholds."""
    v = _number(owner, name, value)
    if not (v >= minimum and math.isfinite(v)):
        _fail(owner, name, f">= {minimum:g}", value)


def at_most(owner: str, name: str, value: Any, maximum: float) -> None:
    """``value`` ≤ ``maximum`` and finite — decay exponents."""
    v = _number(owner, name, value)
    if not (v <= maximum and math.isfinite(v)):
        _fail(owner, name, f"<= {maximum:g}", value)


def unit_interval(owner: str, name: str, value: Any) -> None:
    """``value`` in [0, 1) — EMA rates and momentum coefficients."""
    if not 0.0 <= _number(owner, name, value) < 1.0:
        _fail(owner, name, "in [0, 1)", value)


def open_unit_interval(owner: str, name: str, value: Any, why: str = "") -> None:
    """``value`` in (0, 1) — Armijo constants, backtracking factors, Schedule-Free's β (``why`` says why 0 is out)."""
    if not 0.0 < _number(owner, name, value) < 1.0:
        _fail(owner, name, "in (0, 1)" + (f" ({why})" if why else ""), value)


def closed_unit_interval(owner: str, name: str, value: Any) -> None:
    """``value`` in [0, 1] — weights such as the soft cautious factor."""
    if not 0.0 <= _number(owner, name, value) <= 1.0:
        _fail(owner, name, "in [0, 1]", value)


def integer(owner: str, name: str, value: Any, minimum: int = 0) -> None:
    """An integer ≥ ``minimum`` (booleans and floats are refused) — step counts, tries."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(owner, name, f"an integer >= {minimum}", value)


def boolean(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, bool):
        _fail(owner, name, "True or False", value)


def sequence(owner: str, name: str, value: Any, count: int, what: str = "") -> None:
    """A sequence (not a string) of ``count`` items; ``what`` names them, e.g. ``"(eps1 or None, eps2)"``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != count:
        _fail(owner, name, f"a sequence of {count} numbers" + (f" {what}" if what else ""), value)


def betas(owner: str, value: Sequence[Any], name: str = "betas", count: int = 2) -> None:
    """``count`` coefficients, each in [0, 1)."""
    sequence(owner, name, value, count)
    for i, beta in enumerate(value):
        unit_interval(owner, f"{name}[{i}]", beta)


def choice(owner: str, name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        _fail(owner, name, f"one of {list(choices)}", value)
