"""Load run directories written by the training loop into :class:`Run` objects.

A run directory holds::

    config.yaml     the resolved Hydra config
    metrics.jsonl   one JSON object per logged point: step, split, examples, train_time, eval_time, loss, ...
    summary.json    {"status": "completed" | "failed" | "running" | "diverged", "error": ..., "final": {...}}

A *source* is any directory containing run directories at any depth (a Hydra multirun directory, a sweep's
root, or a single run directory). :func:`load_runs` never drops a run silently: a run that did not complete, or
that has no metrics, is returned in :attr:`RunSet.problems` with its status and error.

Two quantities are derived rather than logged: ``excess_loss`` (loss − the task's optimum, for tasks that declare
one: the loop logs ``gap_to_optimum`` with every evaluation) and the ``forwards`` axis (cumulative forward passes,
from the line searches' ``opt/forwards_per_step``; one per step for every other optimizer).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from research_optim.report import ReportError
from research_optim.run_dir import NOT_IN_IDENTITY
from research_optim.tracking import read_summary

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"

COMPLETED = "completed"
# Statuses this module assigns itself (the training loop writes completed/failed/running/diverged).
UNFINISHED = "unfinished"  # metrics but no summary.json: the process died without reaching the end
MISSING = "missing"  # config.yaml only: the run never logged anything
NO_METRICS = "no_metrics"  # summary says completed but metrics.jsonl is missing or empty
UNREADABLE = "unreadable"  # a file could not be parsed

TEST_SPLIT = "test"  # evaluated once at the end of a run (data with a test split): reported, never selected on
EXCESS_LOSS = "excess_loss"  # loss − optimum (derived)
FORWARDS = "forwards"  # cumulative forward passes (derived x axis)
FORWARDS_PER_STEP = "opt/forwards_per_step"  # logged by line searches: mean forward passes per step of a window
# Config keys that do not make a run a different configuration: what the run identity leaves out, the seed, and
# how often the loop logs, evaluates and checkpoints.
NOT_SETTINGS = (*NOT_IN_IDENTITY, "seed", "train.log_every", "train.eval_every", "train.checkpoint_every")
# Keys of the optimizer node that are not hyperparameters.
_NON_HPARAM_KEYS = frozenset({"name", "_target_", "_partial_", "_recursive_", "_convert_", "defaults"})
# Sub-directories that never contain runs; hidden ones (.hydra, .submitit) are skipped as well.
_SKIP_DIRS = frozenset({"checkpoints", "wandb", "__pycache__"})
# Above this many run directories load_runs shows a progress bar.
_PROGRESS_THRESHOLD = 20


@dataclass
class Run:
    """One run directory, loaded.

    ``metrics`` has one row per (split, step) — for resumed runs the last logged line wins — sorted by split
    then step. ``varying`` holds the optimizer hyperparameters whose values differ between runs of the same
    optimizer in the collection it was loaded with (filled by :func:`load_runs`; empty for :func:`load_run`).
    """

    path: Path
    config: dict[str, Any]
    metrics: pd.DataFrame
    status: str
    error: str | None
    summary: dict[str, Any]
    optimizer: str
    task: str
    seed: int | None
    run_id: str | None
    sweep: str | None
    group: str | None
    hparams: dict[str, Any]
    varying: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Completed and has at least one logged metric."""
        return self.status == COMPLETED and not self.metrics.empty

    @property
    def label(self) -> str:
        """Optimizer name plus the varying hyperparameters, e.g. ``adamw lr=0.001``."""
        if not self.varying:
            return self.optimizer
        settings = " ".join(f"{key}={format_value(value)}" for key, value in sorted(self.varying.items()))
        return f"{self.optimizer} {settings}"

    @property
    def environment(self) -> dict[str, Any]:
        """Where the run executed, as summary.json records it (host, device, threads, load_average, ...)."""
        return self.summary.get("environment") or {}

    @cached_property
    def settings(self) -> dict[str, Any]:
        """The flattened config (dotted keys) without :data:`NOT_SETTINGS`: what makes this configuration."""
        return {key: value for key, value in flatten(self.config).items()
                if not any(key == skip or key.startswith(skip + ".") for skip in NOT_SETTINGS)}

    @cached_property
    def optimum(self) -> float | None:
        """The task's optimal loss, from the evaluations' ``loss − gap_to_optimum``; None when not logged."""
        rows = self.metrics
        if "gap_to_optimum" not in rows or "loss" not in rows:
            return None
        both = rows.dropna(subset=["loss", "gap_to_optimum"])
        return float((both["loss"] - both["gap_to_optimum"]).median()) if not both.empty else None

    def curve(self, metric: str = "loss", split: str = "train", x: str = "step") -> pd.Series:
        """The logged values of ``metric`` in ``split`` as a Series indexed by ``x`` (rows without it dropped).

        ``metric="excess_loss"`` is loss − :attr:`optimum` (empty when the task has none); ``x="forwards"`` is the
        cumulative number of forward passes (empty when a line search did not log them per step).
        """
        empty = pd.Series(dtype=float, name=metric)
        if metric == EXCESS_LOSS:
            optimum = self.optimum
            return empty if optimum is None else (self.curve("loss", split, x) - optimum).rename(metric)
        rows = self.metrics
        if rows.empty or metric not in rows:
            return empty
        rows = rows[rows["split"] == split].dropna(subset=[metric])
        if x == FORWARDS:
            passes = self.forward_passes()
            if passes is None:
                return empty
            rows = rows.assign(forwards=np.interp(rows["step"].to_numpy(dtype=float), passes.index.to_numpy(),
                                                  passes.to_numpy()))
        if x not in rows:
            return empty
        rows = rows.dropna(subset=[x]).sort_values(x, kind="stable").drop_duplicates(subset=x, keep="last")
        return pd.Series(rows[metric].to_numpy(dtype=float), index=rows[x].to_numpy(), name=metric)

    def forward_passes(self) -> pd.Series | None:
        """Cumulative forward passes against the step (from step 0), or None when they are unknown.

        Each training step's gradient evaluation counts one; a line search adds one per trial point and logs the
        mean per step of each window as ``opt/forwards_per_step``. Optimizers without a line search: one per step.
        """
        train = self.metrics[self.metrics["split"] == "train"]
        if train.empty:
            return None
        steps = train["step"].to_numpy(dtype=float)
        if FORWARDS_PER_STEP in train:
            per_step = train[FORWARDS_PER_STEP].to_numpy(dtype=float)
            if np.isnan(per_step).any():
                return None
        elif "opt/forwards" in train:  # a line search from before the per-step mean was logged
            return None
        else:
            per_step = np.ones_like(steps)
        passes = np.cumsum(per_step * np.diff(steps, prepend=0.0))
        return pd.Series(np.concatenate([[0.0], passes]), index=np.concatenate([[0.0], steps]), name=FORWARDS)


@dataclass
class Problem:
    """A run that cannot be used as a result: its directory, status, error, and the run when it could be read."""

    path: Path
    status: str
    error: str | None
    run: Run | None = None


@dataclass
class RunSet:
    """The usable runs of a source, plus every run that did not complete. Iterating yields the usable runs."""

    runs: list[Run]
    problems: list[Problem]

    def __iter__(self) -> Iterator[Run]:
        return iter(self.runs)

    def __len__(self) -> int:
        return len(self.runs)

    def problems_table(self) -> pd.DataFrame:
        """The problems as a DataFrame (path, status, error), for printing at the top of a report."""
        return pd.DataFrame(
            [(str(p.path), p.status, p.error) for p in self.problems], columns=["path", "status", "error"]
        )


def find_runs(source: str | os.PathLike[str]) -> list[Path]:
    """Every run directory under ``source`` (``source`` itself included), sorted.

    A run directory is one that holds ``config.yaml``. The search does not descend into run directories nor
    into hidden directories — Hydra's ``.hydra/config.yaml`` is a copy, not a run.
    """
    root = Path(source)
    if not root.is_dir():
        raise ReportError(f"report source {root} is not a directory")
    found: list[Path] = []
    for directory, subdirs, files in os.walk(root):
        if CONFIG_FILE in files:
            found.append(Path(directory))
            subdirs.clear()
            continue
        subdirs[:] = [d for d in subdirs if not d.startswith(".") and d not in _SKIP_DIRS]
    return sorted(found)


def load_run(path: str | os.PathLike[str]) -> Run:
    """Read one run directory. Raises ``ValueError``/``OSError`` when ``config.yaml`` or a metrics line is corrupt."""
    path = Path(path)
    config = _read_config(path / CONFIG_FILE)
    metrics = read_metrics(path / METRICS_FILE)
    summary = read_summary(path)
    status, error = _status(summary, metrics, has_metrics_file=(path / METRICS_FILE).exists())
    optimizer_node = config.get("optimizer") or {}
    return Run(
        path=path,
        config=config,
        metrics=metrics,
        status=status,
        error=error,
        summary=summary or {},
        optimizer=str(optimizer_node.get("name", "unknown")),
        task=task_name(config),
        seed=_as_int(config.get("seed")),
        run_id=_get(config, "run.id"),
        sweep=_get(config, "run.sweep"),
        group=_get(config, "run.group"),
        hparams={k: v for k, v in optimizer_node.items() if k not in _NON_HPARAM_KEYS},
    )


def load_runs(
    source: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], progress: bool = True
) -> RunSet:
    """Load every run directory under ``source`` (one directory or several).

    Completed runs with metrics go to :attr:`RunSet.runs`; all others — failed, diverged, still running,
    unfinished (no summary.json), without metrics, or unreadable — go to :attr:`RunSet.problems`.
    A tqdm progress bar is shown when ``progress`` and there are more than 20 run directories.
    """
    sources = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    paths = sorted({p for s in sources for p in find_runs(s)})
    iterator: Iterable[Path] = paths
    if progress and len(paths) > _PROGRESS_THRESHOLD:
        from tqdm.auto import tqdm

        iterator = tqdm(paths, desc="loading runs", unit="run")

    runs: list[Run] = []
    problems: list[Problem] = []
    for path in iterator:
        try:
            run = load_run(path)
        except (OSError, ValueError) as exc:  # a corrupt file must not hide the other runs
            problems.append(Problem(path, UNREADABLE, f"{type(exc).__name__}: {exc}"))
            continue
        if run.ok:
            runs.append(run)
        else:
            problems.append(Problem(path, run.status, run.error, run))
    _fill_varying(runs + [p.run for p in problems if p.run is not None])
    return RunSet(runs, problems)


def read_metrics(path: Path) -> pd.DataFrame:
    """Parse ``metrics.jsonl``: last line per (split, step) wins, rows sorted by split then step.

    A partial *last* line (the process died mid-write) is ignored; a corrupt line elsewhere raises ValueError.
    """
    if not path.exists():
        return pd.DataFrame(columns=["step", "split"])
    lines = path.read_text().splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number}: not a JSON object ({exc})") from exc
    if not records:
        return pd.DataFrame(columns=["step", "split"])
    frame = pd.DataFrame.from_records(records)
    missing = {"step", "split"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: lines lack the keys {sorted(missing)}")
    frame = frame.drop_duplicates(subset=["split", "step"], keep="last")
    return frame.sort_values(["split", "step"], kind="stable").reset_index(drop=True)


def task_name(config: dict[str, Any]) -> str:
    """``config["task"]`` when the config sets it, otherwise ``"<model.name>/<data.name>"``."""
    if config.get("task"):
        return str(config["task"])
    return f"{_get(config, 'model.name') or 'unknown'}/{_get(config, 'data.name') or 'unknown'}"


def _read_config(path: Path) -> dict[str, Any]:
    from omegaconf import OmegaConf

    try:
        node = OmegaConf.load(path)
    except Exception as exc:  # OmegaConf raises yaml and its own errors; report them uniformly
        raise ValueError(f"{path}: cannot parse ({exc})") from exc
    try:
        config = OmegaConf.to_container(node, resolve=True)
    except Exception:  # an interpolation that only resolves inside Hydra (e.g. ${hydra:...}): keep it raw
        config = OmegaConf.to_container(node, resolve=False)
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return config


def _status(summary: dict[str, Any] | None, metrics: pd.DataFrame, has_metrics_file: bool) -> tuple[str, str | None]:
    if summary is None:
        if metrics.empty:
            return MISSING, "no summary.json and no metrics: the run never started or logged nothing"
        return UNFINISHED, "no summary.json: the run never finished"
    status = str(summary.get("status", "unknown"))
    error = summary.get("error")
    if status == COMPLETED and metrics.empty:
        what = "empty" if has_metrics_file else "missing"
        return NO_METRICS, f"summary says completed but metrics.jsonl is {what}"
    return status, error


def _fill_varying(runs: Sequence[Run]) -> None:
    """Per optimizer, set ``run.varying`` to the hyperparameters whose values differ between its runs."""
    by_optimizer: dict[str, list[Run]] = {}
    for run in runs:
        by_optimizer.setdefault(run.optimizer, []).append(run)
    for group in by_optimizer.values():
        keys = {key for run in group for key in run.hparams}
        varying = [key for key in sorted(keys) if len({_hashable(run.hparams.get(key)) for run in group}) > 1]
        for run in group:
            run.varying = {key: run.hparams.get(key) for key in varying}


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"optimizer.lr": 0.001, ...}`` (lists are values, not nodes)."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def _get(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _as_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def format_value(value: Any) -> str:
    """A config value for a label: floats as ``%g`` (0.003, 1e-05), lists as ``[0.9, 0.99]``."""
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)
