"""Whether the training times of runs can be compared: only when they were measured under the same conditions.

A run's wall-clock time depends on what else the machine was doing: on a shared 2-core machine a Lion step, 0.4×
an AdamW step side by side, took 2.6× longer per 1000 steps in a sweep. Runs record in summary.json's
``environment`` the ``host``, ``device``, intra-op ``threads`` and the machine's ``load_average`` (one number, or
the [1, 5, 15]-minute triple whose first value is used). Times are compared only when every run recorded all four,
on one host and device with the same threads, at load averages within :data:`LOAD_TOLERANCE` of each other
(runs interleaved in one process, as the benchmarks do, pass; a sweep on a busy machine does not). Otherwise the
report says why and compares on steps and forward passes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real

from research_optim.report.runs import Run

LOAD_TOLERANCE = 0.5  # processes: the spread of load averages under which runs count as measured alike
NOT_COMPARABLE = "not comparable"


def load_average(run: Run) -> float | None:
    """The 1-minute load average the run recorded, or None (not recorded, or not a number)."""
    value = run.environment.get("load_average")
    if isinstance(value, (list, tuple)) and value:
        value = value[0]
    return float(value) if isinstance(value, Real) and math.isfinite(value) else None


def comparable(runs: Sequence[Run]) -> tuple[bool, str]:
    """Whether the train times of ``runs`` may be compared, and the reason in words (for the report)."""
    if not runs:
        return False, f"{NOT_COMPARABLE}: no runs"
    loads = [load_average(run) for run in runs]
    missing = sum(load is None or run.environment.get("threads") is None for run, load in zip(runs, loads))
    if missing:
        return False, f"{NOT_COMPARABLE}: machine load not recorded ({missing} of {len(runs)} runs)"
    for key in ("host", "device", "threads"):
        values = sorted({str(run.environment.get(key)) for run in runs})
        if len(values) > 1:
            return False, f"{NOT_COMPARABLE}: measured with different {key} ({', '.join(values)})"
    spread = f"load average {min(loads):.2f}–{max(loads):.2f}"
    if max(loads) - min(loads) > LOAD_TOLERANCE:
        return False, f"{NOT_COMPARABLE}: measured at different loads ({spread})"
    return True, f"comparable: one host, device and thread count, {spread}"
