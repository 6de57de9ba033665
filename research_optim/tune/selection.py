"""Selection: the best trial, whether it sits on the edge of its search space, and the selection file.

``selection.json`` in the sweep directory names, per optimizer and task, the selected configuration and the
confirmation seeds to compare it on (the format of docs/reports.md): ``python -m research_optim.report`` then
compares the selected configurations on fresh seeds. Each study replaces its own entry and keeps the others.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from optuna.trial import FrozenTrial, TrialState

from research_optim.report.methods import SELECTION_FILE
from research_optim.tune.space import SearchSpace
from research_optim.tune.study import file_lock

RULE = ("python -m research_optim.tune: per optimizer and task, the trial with the best mean final validation "
        "metric on the tuning seeds (validation held out from the training data), re-run on fresh confirmation "
        "seeds; each entry's notes give its sampler, budget and seeds")


def best_trial(trials: list[FrozenTrial], direction: str) -> FrozenTrial | None:
    """The completed trial with the best finite value (diverged trials hold the worst value: never best)."""
    done = [t for t in trials if t.state == TrialState.COMPLETE and math.isfinite(t.value)]
    pick = min if direction == "minimize" else max
    return pick(done, key=lambda t: t.value, default=None)


def edge_notes(space: SearchSpace, params: dict[str, Any], fraction: float) -> list[str]:
    """A note for every value of ``params`` in the outer ``fraction`` of its dimension, with the override that
    widens it."""
    notes = []
    for dim in space.dimensions:
        side = dim.edge(params[dim.name], fraction)
        if side is not None:
            bound = "high" if side == "upper" else "low"
            notes.append(f"{dim.name}={params[dim.name]:.4g} on the {side} edge of its search space "
                         f"{dim.describe()}: widen it (search_space.{dim.name}.{bound}={dim.widened(side):g}) and "
                         "raise tune.budget; the trials so far still count")
    return notes


def method_of(entry: dict[str, Any], method_keys: list[str]) -> tuple[Any, ...]:
    """What an entry selects for: the optimizer on the task, and its values of the method keys (the cautious
    base, say: a method of its own)."""
    return entry["task"], entry["optimizer"], *(repr(entry["config"].get(key)) for key in method_keys)


def write_selection(sweep_dir: Path, method_keys: list[str], entry: dict[str, Any]) -> Path:
    """Add ``entry`` to the sweep's selection file, replacing the entry for the same method."""
    path = sweep_dir / SELECTION_FILE
    with file_lock(sweep_dir / "studies" / "selection.lock"):
        selected = json.loads(path.read_text())["selected"] if path.exists() else []
        selected = [e for e in selected if method_of(e, method_keys) != method_of(entry, method_keys)] + [entry]
        tmp = path.with_suffix(f".tmp.{os.getpid()}")
        tmp.write_text(json.dumps({"rule": RULE, "selected": selected}, indent=2) + "\n")
        os.replace(tmp, path)
    return path


def selection_config(run_config: Any, keys: list[str]) -> dict[str, Any]:
    """The selected run's values of ``keys``, as its config.yaml nests them (lists whole)."""
    return {key: OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
            for key in keys for value in [OmegaConf.select(run_config, key)]}
