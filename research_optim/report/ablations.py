"""Ablation grids: which hyperparameters a sweep varied, and the final loss on a grid of two of them.

A list-valued hyperparameter (``betas``) is split into its positions (``betas[0]``, ``betas[1]``) so that a
β1 × β2 sweep becomes a two-axis grid; positions that never change are dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

from research_optim.report.analysis import run_final
from research_optim.report.runs import Run


def axes_of(run: Run) -> dict[str, Any]:
    """``run.varying`` with list values split into ``key[i]`` entries."""
    flat: dict[str, Any] = {}
    for key, value in run.varying.items():
        if isinstance(value, (list, tuple)):
            flat.update({f"{key}[{i}]": v for i, v in enumerate(value)})
        else:
            flat[key] = value
    return flat


def varying_axes(runs: list[Run]) -> list[str]:
    """The split keys whose values differ between ``runs`` (sorted)."""
    keys = {key for run in runs for key in axes_of(run)}
    return sorted(k for k in keys if len({repr(axes_of(r).get(k)) for r in runs}) > 1)


def two_axis_grids(
    runs: Iterable[Run], split: str = "train", metric: str = "loss", last_k: int = 1
) -> list[tuple[str, str, pd.DataFrame]]:
    """Per (task, optimizer) whose runs vary exactly two hyperparameters: (task, optimizer, grid).

    The grid has the first axis (alphabetical) as rows, the second as columns, and holds the mean over seeds of
    the final ``metric``; a missing combination is NaN.
    """
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.task, run.optimizer), []).append(run)
    grids = []
    for (task, optimizer), members in sorted(groups.items()):
        axes = varying_axes(members)
        if len(axes) != 2:
            continue
        rows = [(axes_of(r)[axes[0]], axes_of(r)[axes[1]], run_final(r, metric, split, last_k))
                for r in members]
        frame = pd.DataFrame(rows, columns=axes + ["value"])
        grid = frame.pivot_table(index=axes[0], columns=axes[1], values="value", aggfunc="mean", dropna=False)
        grids.append((task, optimizer, grid))
    return grids


def config_summary(
    runs: Iterable[Run], split: str = "train", metric: str = "loss", last_k: int = 1
) -> pd.DataFrame:
    """Per (task, label): mean, std and number of seeds of the final ``metric`` — the ablation bar chart."""
    rows = [(r.task, r.label, run_final(r, metric, split, last_k)) for r in runs]
    frame = pd.DataFrame(rows, columns=["task", "label", "value"])
    table = frame.groupby(["task", "label"], sort=True)["value"].agg(["mean", "std", "count"])
    return table.rename(columns={"count": "seeds"}).reset_index()
