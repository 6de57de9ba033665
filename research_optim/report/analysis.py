"""Pure functions from runs to tables: the numbers an optimizer paper reports.

* final loss per task × optimizer (mean over seeds), its log-average and average-rank rows (the SaLSA table);
* paired comparisons with a baseline: the final-value difference and the speedup in reaching the baseline's final
  value (the Cautious paper's "1.47×"), each with a 95% interval over seeds and a verdict (:mod:`.stats`);
* AlgoPerf performance profiles and their integrated score;
* mean ± band curves over seeds on a common x grid, and hyperparameter sensitivity.

Runs are :class:`research_optim.report.runs.Run` objects (a :class:`RunSet` iterates over its usable runs).
Every function that groups runs takes ``label``: a function naming a run's column; the default,
``Run.label``, is the optimizer name plus the hyperparameters that vary in the sweep, so runs with
different learning rates are never averaged together by accident (the report passes the method names of
:mod:`.methods` instead, with one configuration per method).

The training split logs the mean loss of each window of ``train.log_every`` steps, a noisy quantity: its curves
are smoothed by a trailing mean of ``last_k`` windows, and its "final" value is the last smoothed one. Evaluation
splits (val) are full passes over the split and are used as logged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from research_optim.report import stats
from research_optim.report.runs import EXCESS_LOSS, Run

Label = Callable[[Run], str]
HIGHER_IS_BETTER = frozenset({"accuracy"})  # every other metric (loss, excess_loss, ...) is lower-is-better
SMOOTHED_SPLIT = "train"  # the split whose logged values are window means (smoothed over last_k windows)
SPLIT_NAMES = {"train": "training", "val": "validation"}
METRIC_NAMES = {EXCESS_LOSS: "excess loss (loss − optimum)"}


def higher_is_better(metric: str) -> bool:
    return metric in HIGHER_IS_BETTER


def describe_metric(metric: str, split: str) -> str:
    """In words, e.g. "validation excess loss (loss − optimum)"."""
    return f"{SPLIT_NAMES.get(split, split)} {METRIC_NAMES.get(metric, metric)}"


def window(split: str, last_k: int) -> int:
    """How many logged values a final value and a smoothed curve average: ``last_k`` on train, 1 elsewhere."""
    if last_k < 1:
        raise ValueError(f"last_k must be >= 1, got {last_k}")
    return last_k if split == SMOOTHED_SPLIT else 1


def smooth(curve: pd.Series, k: int) -> pd.Series:
    """Trailing mean over ``k`` logged values (the first ones average what exists)."""
    return curve if k == 1 else curve.rolling(k, min_periods=1).mean()


def run_final(run: Run, metric: str = "loss", split: str = "train", last_k: int = 1) -> float:
    """A run's final ``metric`` on ``split``: the last value of its curve smoothed as :func:`window` says."""
    return final_value(run.curve(metric, split), window(split, last_k))


def _default_label(run: Run) -> str:
    return run.label


# --------------------------------------------------------------------------------------------- final values
def final_value(curve: pd.Series, last_k: int = 1) -> float:
    """The "final" value of a curve: the mean of its last ``last_k`` logged values (``last_k=1``: the last one).

    NaN for an empty curve. Averaging a few points smooths the noise of a per-window training loss. Computed as
    the last point of :func:`smooth` — bit for bit, so a smoothed curve reaches its own final value.
    """
    if last_k < 1:
        raise ValueError(f"last_k must be >= 1, got {last_k}")
    if curve.empty:
        return math.nan
    return float(smooth(curve, last_k).iloc[-1])


def final_values(
    runs: Iterable[Run], split: str = "train", metric: str = "loss", last_k: int = 1, label: Label | None = None
) -> pd.DataFrame:
    """One row per run: task, optimizer (the label), seed, value (its final ``metric``, see :func:`run_final`), path."""
    label = label or _default_label
    rows = [(run.task, label(run), run.seed, run_final(run, metric, split, last_k), str(run.path)) for run in runs]
    return pd.DataFrame(rows, columns=["task", "optimizer", "seed", "value", "path"])


def final_loss_table(
    runs: Iterable[Run],
    split: str = "train",
    metric: str = "loss",
    last_k: int = 1,
    label: Label | None = None,
    agg: str = "mean",
) -> pd.DataFrame:
    """Task × optimizer table of the final ``metric``, aggregated over seeds (``agg``: mean, std, count, ...).

    "Final" is :func:`run_final`: on train the mean of the last ``last_k`` logged windows, elsewhere the last value.
    A task/optimizer pair with no run is NaN.
    """
    values = final_values(runs, split, metric, last_k, label)
    table = values.pivot_table(index="task", columns="optimizer", values="value", aggfunc=agg, dropna=False)
    table.columns.name = None
    return table


def log_average(table: pd.DataFrame) -> pd.Series:
    """Per column, the geometric mean over rows: ``exp(mean(log(values)))`` — the SaLSA paper's "log average".

    Losses of different tasks differ by orders of magnitude; the geometric mean keeps one task from dominating.
    A column with a missing (NaN) task is NaN: an average over fewer tasks would not be comparable.
    """
    values = table.astype(float)
    if (values <= 0).any().any():
        bad = [str(c) for c in values.columns if (values[c] <= 0).any()]
        raise ValueError(f"log_average needs positive values; columns {bad} have values <= 0")
    return np.exp(np.log(values).mean(axis=0, skipna=False)).rename("log average")


def average_rank(table: pd.DataFrame, lower_is_better: bool = True) -> pd.Series:
    """Per row (task) rank the columns (1 = best; ties share the average rank), then average each column.

    A missing (NaN) entry ranks below every present one (missing entries tie among themselves), so a method
    that diverged on a task is counted as the worst there rather than ignored.
    """
    ranks = table.astype(float).rank(axis=1, method="average", ascending=lower_is_better, na_option="bottom")
    return ranks.mean(axis=0).rename("average rank")


# -------------------------------------------------------------------------------------------- time to target
def steps_to_target(curve: pd.Series, target: float, lower_is_better: bool = True) -> float:
    """The first x (index of ``curve``, e.g. step or train_time) at which the curve reaches ``target``.

    "Reaches" means ``value <= target`` (``>=`` when ``lower_is_better`` is False). Only logged points count —
    no interpolation between them. NaN when the curve never reaches the target.
    """
    curve = curve.dropna().sort_index()
    reached = curve <= target if lower_is_better else curve >= target
    hits = curve.index[reached.to_numpy()]
    return float(hits[0]) if len(hits) else math.nan


def x_to_target(run: Run, target: float, metric: str, split: str, x: str, last_k: int) -> float:
    """The first ``x`` at which ``run``'s smoothed ``metric`` curve on ``split`` reaches ``target`` (NaN: never)."""
    curve = smooth(run.curve(metric, split, x=x), window(split, last_k))
    return steps_to_target(curve, target, lower_is_better=not higher_is_better(metric))


def speedup_per_seed(
    runs: Iterable[Run],
    baseline: str,
    metric: str = "loss",
    split: str = "train",
    last_k: int = 1,
    axes: Sequence[str] = ("step", "train_time"),
    label: Label | None = None,
) -> pd.DataFrame:
    """The raw comparisons behind :func:`speedup_vs_baseline`, one row per (pair of runs, axis).

    Per pair, the target is the baseline run's final ``metric`` (:func:`run_final`); each run's x-to-target is
    the first x at which its smoothed curve reaches it (:func:`x_to_target`), x being each of ``axes`` ("step",
    "forwards", "train_time"). Speedup = baseline's x-to-target / method's. Runs are paired by seed when the method
    and the baseline share seeds (only shared seeds are used); otherwise every method run is compared with every
    baseline run (``paired`` False). A method run that never reaches the target: speedup 0.0, ``reached`` False.

    Columns: task, optimizer, axis, seed, baseline_seed, target, baseline_x, method_x, speedup, reached, paired.
    """
    rows: list[dict[str, Any]] = []
    for task, name, pairs, paired in _against_baseline(runs, baseline, label or _default_label):
        for base, method in pairs:
            target = run_final(base, metric, split, last_k)
            for axis in axes:
                base_x = x_to_target(base, target, metric, split, axis, last_k)
                method_x = x_to_target(method, target, metric, split, axis, last_k)
                reached = not math.isnan(method_x)
                rows.append(dict(task=task, optimizer=name, axis=axis, seed=method.seed, baseline_seed=base.seed,
                                 target=target, baseline_x=base_x, method_x=method_x,
                                 speedup=_ratio(base_x, method_x) if reached else 0.0, reached=reached,
                                 paired=paired))
    columns = ["task", "optimizer", "axis", "seed", "baseline_seed", "target", "baseline_x", "method_x",
               "speedup", "reached", "paired"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def speedup_vs_baseline(
    runs: Iterable[Run],
    baseline: str,
    metric: str = "loss",
    split: str = "train",
    last_k: int = 1,
    axes: Sequence[str] = ("step", "train_time"),
    label: Label | None = None,
) -> pd.DataFrame:
    """Speedup of every method over ``baseline`` in reaching the baseline's final ``metric``, per task.

    Rows (task, optimizer, axis); columns mean, std, min, max of the per-seed speedups (see
    :func:`speedup_per_seed` for the pairing and the target), n (comparisons), n_reached (comparisons where the
    method reached the target; the others count as speedup 0) and paired. ``std`` is the sample standard deviation
    (NaN for a single comparison). :func:`comparison` gives the interval and the verdict.
    """
    per_seed = speedup_per_seed(runs, baseline, metric, split, last_k, axes, label)
    grouped = per_seed.groupby(["task", "optimizer", "axis"], sort=True)
    table = grouped["speedup"].agg(["mean", "std", "min", "max", "count"]).rename(columns={"count": "n"})
    table["n_reached"] = grouped["reached"].sum().astype(int)
    table["paired"] = grouped["paired"].all()
    return table


FINAL = "final"  # the comparison quantity "difference of final values" (the others are the axes)


def comparison(
    runs: Iterable[Run],
    baseline: str,
    metric: str = "loss",
    split: str = "train",
    last_k: int = 1,
    axes: Sequence[str] = ("step",),
    label: Label | None = None,
    method: str = "t",
) -> pd.DataFrame:
    """Every method against ``baseline``, paired by seed, with a 95% interval and a verdict per quantity.

    One row per (task, optimizer, quantity). Quantity ``final``: the per-seed difference method − baseline of the
    final ``metric``; ``estimate`` is its mean. Quantity = an axis of ``axes``: the per-seed speedup in reaching the
    baseline seed's final value (:func:`speedup_per_seed`); ``estimate`` is the geometric mean, the interval is that
    of the mean log speedup, mapped back — defined only when every seed reached the target. ``verdict`` (better /
    worse / indistinguishable at 95%, "–" without an interval) is from the method's point of view. Only seeds both
    sides share count (``n``); none shared gives n = 0 and no interval.

    Columns: task, optimizer, quantity, estimate, low, high, n, reached, verdict.
    """
    better_up = higher_is_better(metric)
    rows: list[dict[str, Any]] = []
    for task, name, pairs, paired in _against_baseline(runs, baseline, label or _default_label):
        pairs = pairs if paired else []
        base_finals = np.array([run_final(b, metric, split, last_k) for b, _ in pairs], dtype=float)
        method_finals = np.array([run_final(m, metric, split, last_k) for _, m in pairs], dtype=float)
        finite = np.isfinite(base_finals) & np.isfinite(method_finals)
        diff = stats.interval(method_finals[finite] - base_finals[finite], method)
        rows.append(_comparison_row(task, name, FINAL, diff, len(pairs), int(finite.sum()), better_up))
        for axis in axes:
            speedups = [_paired_speedup(b, m, metric, split, axis, last_k) for b, m in pairs]
            reached = [s for s in speedups if not math.isnan(s)]
            usable = len(reached) == len(pairs) and all(0 < s < math.inf for s in reached)
            log_speedup = stats.interval(np.log(reached) if usable else [], method)
            rows.append(_comparison_row(task, name, axis, log_speedup.map(math.exp), len(pairs), len(reached),
                                        True, null=1.0))
    columns = ["task", "optimizer", "quantity", "estimate", "low", "high", "n", "reached", "verdict"]
    return pd.DataFrame(rows, columns=columns)


def time_to_target_table(
    runs: Iterable[Run],
    targets: Mapping[str, float] | float,
    metric: str = "loss",
    split: str = "val",
    x: str = "train_time",
    label: Label | None = None,
    last_k: int = 1,
) -> pd.DataFrame:
    """Task × optimizer table of x-to-target (the input of :func:`performance_profiles`).

    ``targets`` maps each task to its target (or is one number for all tasks); tasks without a target are
    left out. Per (task, optimizer) the value is the median over seeds of :func:`x_to_target`, a run that never
    reaches the target counting as infinite (so the median is infinite when most seeds fail, as in AlgoPerf).
    """
    label = label or _default_label
    rows = []
    for run in runs:
        target = targets if isinstance(targets, (int, float)) else targets.get(run.task)
        if target is None:
            continue
        reached_at = x_to_target(run, float(target), metric, split, x, last_k)
        rows.append((run.task, label(run), math.inf if math.isnan(reached_at) else reached_at))
    frame = pd.DataFrame(rows, columns=["task", "optimizer", "time"])
    table = frame.pivot_table(index="task", columns="optimizer", values="time", aggfunc="median")
    table.columns.name = None
    return table


# --------------------------------------------------------------------------------------- performance profiles
def performance_ratios(time_to_target: pd.DataFrame) -> pd.DataFrame:
    """Per task, each method's time-to-target divided by the best (smallest) on that task.

    NaN and inf (never reached) become inf; a task nobody solved gives inf for everyone.
    """
    times = time_to_target.astype(float).fillna(math.inf)
    if (times <= 0).any().any():
        raise ValueError("times to target must be positive")
    best = times.min(axis=1)
    # inf / inf (a task nobody solved) is NaN: that task counts as unsolved for everyone.
    return times.div(best, axis=0).fillna(math.inf)


def performance_profiles(time_to_target: pd.DataFrame, taus: Sequence[float] | None = None) -> pd.DataFrame:
    """AlgoPerf performance profiles: ρ_m(τ) = fraction of tasks where method m's time ≤ τ × the best time.

    ``time_to_target`` is tasks × optimizers; NaN/inf mean the target was never reached (never counted as
    solved). ``taus`` defaults to 1..4 in steps of 0.01. Returns a DataFrame indexed by τ, one column per
    optimizer, values in [0, 1].
    """
    grid = np.linspace(1.0, 4.0, 301) if taus is None else np.asarray(taus, dtype=float)
    ratios = performance_ratios(time_to_target).to_numpy()
    n_tasks = ratios.shape[0]
    if n_tasks == 0:
        raise ValueError("performance_profiles needs at least one task")
    # (taus, tasks, methods) comparison, then the fraction of tasks per (tau, method).
    solved = ratios[None, :, :] <= grid[:, None, None]
    profile = solved.sum(axis=1) / n_tasks
    return pd.DataFrame(profile, index=pd.Index(grid, name="tau"), columns=time_to_target.columns)


def integrated_profile_score(profiles: pd.DataFrame, tau_max: float = 4.0) -> pd.Series:
    """Normalised area under each profile: ``(1 / (τ_max − 1)) ∫_1^τ_max ρ(τ) dτ``.

    1.0 means the method was the fastest on every task (ρ ≡ 1 from τ = 1); 0.0 means it never came within
    τ_max of the best on any task. ρ is a right-continuous step function, so the integral is the left Riemann
    sum over the profile's τ grid (value at τ_i held until τ_{i+1}) — exact when every ratio lies on the grid,
    otherwise low by at most one grid spacing. The grid must start at 1 and reach τ_max.
    """
    taus = profiles.index.to_numpy(dtype=float)
    if tau_max <= 1:
        raise ValueError(f"tau_max must be > 1, got {tau_max}")
    if not np.isclose(taus[0], 1.0) or taus[-1] < tau_max - 1e-12:
        raise ValueError(f"the profile's tau grid must span [1, {tau_max}], got [{taus[0]}, {taus[-1]}]")
    keep = taus <= tau_max + 1e-12
    taus, values = taus[keep], profiles.to_numpy(dtype=float)[keep]
    widths = np.diff(np.append(taus, tau_max))
    return pd.Series(widths @ values / (tau_max - 1.0), index=profiles.columns, name="score")


# ------------------------------------------------------------------------------------------- curves and sweeps
def mean_band(
    runs: Iterable[Run],
    metric: str = "loss",
    x: str = "step",
    split: str = "train",
    grid: Sequence[float] | None = None,
    n_points: int = 200,
    label: Label | None = None,
) -> pd.DataFrame:
    """Mean, std, min and max over seeds of each (task, optimizer)'s curve, on a common x grid.

    Each run's curve is linearly interpolated onto the grid. Without ``grid``: for ``x="step"`` the union
    of the logged steps, otherwise ``n_points`` evenly spaced points; either way restricted to the x range
    every seed covers, so no seed is extrapolated. Columns: task, optimizer, x, mean, std (sample; NaN for one
    seed), min, max, n.
    """
    label = label or _default_label
    groups: dict[tuple[str, str], list[pd.Series]] = {}
    for run in runs:
        curve = run.curve(metric, split, x=x)
        if not curve.empty:
            groups.setdefault((run.task, label(run)), []).append(curve)

    frames = []
    for (task, name), curves in sorted(groups.items()):
        low = max(float(c.index.min()) for c in curves)
        high = min(float(c.index.max()) for c in curves)
        if grid is not None:
            points = np.asarray(grid, dtype=float)
        elif x == "step":
            points = np.unique(np.concatenate([c.index.to_numpy(dtype=float) for c in curves]))
        else:
            points = np.linspace(low, high, n_points)
        points = points[(points >= low) & (points <= high)]
        stack = np.stack([np.interp(points, c.index.to_numpy(dtype=float), c.to_numpy()) for c in curves])
        frames.append(
            pd.DataFrame(
                dict(
                    task=task,
                    optimizer=name,
                    x=points,
                    mean=stack.mean(axis=0),
                    std=stack.std(axis=0, ddof=1) if len(curves) > 1 else np.nan,
                    min=stack.min(axis=0),
                    max=stack.max(axis=0),
                    n=len(curves),
                )
            )
        )
    columns = ["task", "optimizer", "x", "mean", "std", "min", "max", "n"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def sensitivity(
    runs: Iterable[Run], param: str = "lr", metric: str = "loss", split: str = "train", last_k: int = 1
) -> pd.DataFrame:
    """Final ``metric`` against a hyperparameter: mean, std (sample), n over seeds per (task, optimizer, value).

    ``param`` is an optimizer hyperparameter (``lr``, ``weight_decay``, ...) or a dotted config path
    (``schedule.warmup``). Runs without it are left out; the other varying hyperparameters are part of the
    optimizer label so that, e.g., an lr curve is drawn per weight decay. Sorted by task, optimizer, value.
    """
    rows = []
    for run in runs:
        value = _param_value(run, param)
        if value is None:
            continue
        rows.append((run.task, sensitivity_label(run, param), _hashable(value), run_final(run, metric, split, last_k)))
    if not rows:
        raise ValueError(f"no run has the hyperparameter {param!r}")
    frame = pd.DataFrame(rows, columns=["task", "optimizer", param, "final"])
    table = frame.groupby(["task", "optimizer", param], sort=True)["final"].agg(["mean", "std", "count"])
    return table.rename(columns={"count": "n"}).reset_index()


def sensitivity_label(run: Run, param: str) -> str:
    """The line of :func:`sensitivity` a run is on: its optimizer and its varying hyperparameters but ``param``."""
    others = {k: v for k, v in run.varying.items() if k != param}
    return " ".join([run.optimizer] + [f"{k}={v}" for k, v in sorted(others.items())])


# ------------------------------------------------------------------------------------------------- helpers
def _against_baseline(runs: Iterable[Run], baseline: str,
                      label: Label) -> Iterator[tuple[str, str, list[tuple[Run, Run]], bool]]:
    """Per task holding ``baseline`` and per other label: (task, label, (baseline run, run) pairs, paired by seed)."""
    by_task: dict[str, dict[str, list[Run]]] = {}
    for run in runs:
        by_task.setdefault(run.task, {}).setdefault(label(run), []).append(run)
    for task, groups in sorted(by_task.items()):
        if baseline not in groups:
            continue
        for name, method_runs in sorted(groups.items()):
            if name != baseline:
                yield task, name, *_pair_by_seed(groups[baseline], method_runs)


def _paired_speedup(base: Run, run: Run, metric: str, split: str, axis: str, last_k: int) -> float:
    """``base``'s x-to-target / ``run``'s, the target being ``base``'s final value; NaN if ``run`` never gets there."""
    target = run_final(base, metric, split, last_k)
    return _ratio(x_to_target(base, target, metric, split, axis, last_k),
                  x_to_target(run, target, metric, split, axis, last_k))


def _comparison_row(task: str, name: str, quantity: str, estimate: stats.Interval, n: int, reached: int,
                    higher_is_better_: bool, null: float = 0.0) -> dict[str, Any]:
    return dict(task=task, optimizer=name, quantity=quantity, estimate=estimate.mean, low=estimate.low,
                high=estimate.high, n=n, reached=reached, verdict=stats.verdict(estimate, higher_is_better_, null))


def _pair_by_seed(base_runs: list[Run], method_runs: list[Run]) -> tuple[list[tuple[Run, Run]], bool]:
    base_by_seed = {run.seed: run for run in base_runs if run.seed is not None}
    shared = [run for run in method_runs if run.seed in base_by_seed]
    if shared:
        return [(base_by_seed[run.seed], run) for run in sorted(shared, key=lambda r: r.seed)], True
    return [(base, method) for base in base_runs for method in method_runs], False


def _ratio(numerator: float, denominator: float) -> float:
    if denominator == 0:  # reached at x = 0: only possible for a trivial target
        return math.inf if numerator > 0 else 1.0
    return numerator / denominator


def _param_value(run: Run, param: str) -> Any:
    if param in run.hparams:
        return run.hparams[param]
    node: Any = run.config
    for part in param.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
