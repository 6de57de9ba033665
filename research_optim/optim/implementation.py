"""Which implementation of a step runs: the readable per-tensor reference, or a ``torch.compile``d multi-tensor step.

Every optimizer with a fast path takes ``implementation=`` (``"auto"`` | ``"reference"`` | ``"compiled"``):

* ``"reference"`` — the per-tensor code, readable and tested against the public reference packages;
* ``"compiled"``  — one ``torch.compile``d function per (device, dtype) bucket of a param group: inductor fuses each
  tensor's update into one pass over memory (Lion: read p, g, m; write p, m — 20 bytes per float32 parameter), which
  is what eager ``torch._foreach_*`` ops cannot do (one pass per op). Falls back to the reference when compilation is
  disabled or unavailable, with the same numerics (tested equal to ≤1e-6 relative in float32);
* ``"auto"`` (default) — compiled when compilation is enabled and the group holds at least ``COMPILE_MIN_NUMEL``
  elements, else the reference: below that size the first-step compile cost (seconds on CPU) is never repaid and
  Python overhead, not memory traffic, dominates the step — so tiny test runs never compile.

Process-wide switch: :func:`set_compile_enabled` or the environment variable ``RESEARCH_OPTIM_COMPILE=0`` (e.g. a
test conftest, or a machine without a C++ compiler). Hyperparameters enter compiled functions as 0-dim float64
tensors, never Python floats: dynamo would specialise on a float and recompile whenever a schedule changes lr.
Compiled artefacts are cached across processes by inductor's FX graph cache (``TORCHINDUCTOR_CACHE_DIR``).
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Callable, Hashable

import torch
from torch import Tensor

__all__ = [
    "IMPLEMENTATIONS", "COMPILE_MIN_NUMEL", "check_implementation", "compile_enabled", "set_compile_enabled",
    "use_compiled", "compiled", "call_compiled", "COMPILE_FAILED", "scalar", "buckets",
]

IMPLEMENTATIONS = ("auto", "reference", "compiled")
COMPILE_MIN_NUMEL = 1 << 20  # ~1M elements: below this "auto" keeps the reference (compile cost not repaid)

RECOMPILE_LIMIT = 64  # static arguments (φ × rule variants) each compile once; dynamo's default cap is 8

_compile_override: bool | None = None
_compiled_cache: dict[Callable[..., Any], Callable[..., Any]] = {}


def check_implementation(implementation: str, owner: str) -> None:
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"{owner}: implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")


def set_compile_enabled(enabled: bool | None) -> None:
    """Enable/disable compiled steps process-wide (None: back to the environment variable's choice)."""
    global _compile_override
    _compile_override = enabled


def compile_enabled() -> bool:
    """True unless switched off (:func:`set_compile_enabled` or ``RESEARCH_OPTIM_COMPILE=0``) or unavailable."""
    if _compile_override is not None:
        enabled = _compile_override
    else:
        enabled = os.environ.get("RESEARCH_OPTIM_COMPILE", "1").lower() not in ("0", "false", "no", "off")
    return enabled and hasattr(torch, "compile") and torch._dynamo.is_dynamo_supported()


def use_compiled(implementation: str, numel: int) -> bool:
    """Whether a group of ``numel`` elements takes the compiled path under ``implementation``."""
    if implementation == "reference" or not compile_enabled():
        return False
    return implementation == "compiled" or numel >= COMPILE_MIN_NUMEL


def compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.compile(fn)``, built once per process (dynamo recompiles per new shapes / static arguments)."""
    if fn not in _compiled_cache:
        # the cap is per function: every φ, Nesterov flag, ... is one more variant of the same code object
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
        _compiled_cache[fn] = torch.compile(fn, fullgraph=True)
    return _compiled_cache[fn]


COMPILE_FAILED = object()  # returned by call_compiled when the compiler failed and nothing was updated


def call_compiled(fn: Callable[..., Any], *args: Any) -> Any:
    """``compiled(fn)(*args)``; if compilation fails (no C++ compiler, unsupported backend, ...), warn once, switch
    compilation off for the process and return ``COMPILE_FAILED`` — the caller then runs its reference path
    (compilation happens before the compiled code runs, so no tensor was modified)."""
    try:
        return compiled(fn)(*args)
    except torch._dynamo.exc.TorchDynamoException as err:
        warnings.warn(f"research_optim: compiling {fn.__name__} failed ({type(err).__name__}: {err}); "
                      "using the reference optimizer steps from now on", RuntimeWarning, stacklevel=3)
        set_compile_enabled(False)
        return COMPILE_FAILED


def scalar(value: float) -> Tensor:
    """A hyperparameter as a 0-dim float64 CPU tensor: a graph input, so a new value never recompiles."""
    return torch.tensor(float(value), dtype=torch.float64)


def buckets(items: list[tuple[Hashable, Any]]) -> dict[Hashable, list[Any]]:
    """Group items by key, keeping order (a compiled multi-tensor call needs one device and dtype)."""
    out: dict[Hashable, list[Any]] = {}
    for key, item in items:
        out.setdefault(key, []).append(item)
    return out
