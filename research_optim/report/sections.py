"""The report's sections, each a pure function of a :class:`Study` (see :func:`build_document`).

:func:`prepare` turns the loaded runs and the command line's :class:`Options` into a :class:`Study` once — the
methods and their configurations (:mod:`.methods`), the baseline, the metric shown per task (excess loss where
the task declares its optimum) and whether wall-clock times are comparable (:mod:`.wallclock`) — and raises
:class:`~research_optim.report.ReportError` for bad input before anything is computed or written.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd
import yaml

from research_optim import environment
from research_optim.report import ReportError, ablations, analysis, plots, provenance, stats, wallclock
from research_optim.report.document import Document, Figure, Section, Table, Text
from research_optim.report.methods import (DEFAULT, DEFAULT_METHOD_KEYS, FIXED, TUNED, Method, Selection,
                                           choose_methods, describe, resolve_baseline)
from research_optim.report.runs import EXCESS_LOSS, FORWARDS, FORWARDS_PER_STEP, Run, RunSet

log = logging.getLogger(__name__)

MAX_CURVES = 12  # methods per plot; beyond that the best ones by final value are drawn (and the caption says so)
DIAGNOSTICS = {
    "opt/masked_fraction": "masked fraction (cautious)",
    "opt/step_size": "η, line-search step size (SaLSA / SLS)",
    "opt/forwards_per_step": "forward passes per step (line searches)",
    "opt/cadence": "line-search cadence (SaLSA)",
    "opt/backtracks": "backtracks per step (line searches)",
    "opt/xy_gap": "x–y gap (Schedule-Free)",
    "opt/lr_applied": "applied lr (Schedule-Free)",
}
AXES = {"step": "steps", FORWARDS: "forward passes", "train_time": "train wall-clock"}


@dataclass
class Options:
    """What the command line chooses (see ``python -m research_optim.report --help``)."""

    title: str = "Optimizer report"
    source: str = ""
    baseline: str | None = None
    metric: str = "loss"
    split: str = "train"
    select_split: str = "val"
    last_k: int = 5
    method_keys: tuple[str, ...] = DEFAULT_METHOD_KEYS
    selection: Selection | None = None
    interval: str = "t"


@dataclass
class Study:
    """What every section reads: the runs, the methods compared, the baseline, per task the metric shown and
    whether wall-clock times are comparable (and why)."""

    runset: RunSet
    options: Options
    methods: list[Method]
    baseline: str | None
    metrics: dict[str, str]
    timing: dict[str, tuple[bool, str]]
    _names: dict[int, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._names = {id(run): method.name for method in self.methods for run in method.runs}

    @property
    def tasks(self) -> list[str]:
        return sorted({m.task for m in self.methods})

    def method_runs(self, task: str) -> list[Run]:
        """The runs of every method's representative configuration on ``task``."""
        return [run for m in self.methods if m.task == task for run in m.runs]

    def label(self, run: Run) -> str:
        """The method a representative run belongs to (the column it is counted in)."""
        return self._names[id(run)]

    def axes(self, task: str) -> list[str]:
        """Cost axes of comparisons: steps; forward passes when a line search runs; wall-clock if comparable."""
        searching = [r for r in self.method_runs(task) if FORWARDS_PER_STEP in r.metrics or "opt/forwards" in r.metrics]
        axes = ["step"]
        if searching and all(FORWARDS_PER_STEP in r.metrics for r in searching):  # else forward passes are unknown
            axes.append(FORWARDS)
        if self.timing[task][0]:
            axes.append("train_time")
        return axes

    def title(self, task: str, split: str | None = None) -> str:
        """The metric shown on ``task`` in words, e.g. "training excess loss (loss − optimum)"."""
        return analysis.describe_metric(self.metrics[task], split or self.options.split)


def prepare(runset: RunSet, options: Options) -> Study:
    """The :class:`Study` of ``runset``; :class:`ReportError` for a metric, split or key no run has, an ambiguous
    or unknown baseline, or a selection file that does not match the runs."""
    runs = list(runset)
    failed = [p.run for p in runset.problems if p.run is not None]
    if runs:
        _check_logged(runs, options.metric, options.split, "--metric/--split")
    for key in options.method_keys:
        if key not in DEFAULT_METHOD_KEYS and not any(key in r.settings for r in runs + failed):
            raise ReportError(f"--method-keys: no run has the config key {key!r}")
    metrics = {task: _shown_metric([r for r in runs if r.task == task], options.metric)
               for task in {r.task for r in runs + failed}}
    methods = choose_methods(runs, failed, metrics, options.select_split, options.last_k, options.method_keys,
                             options.selection)
    baseline = resolve_baseline([m.name for m in methods if m.runs], options.baseline)
    timing = {task: wallclock.comparable([r for m in methods if m.task == task for r in m.runs])
              for task in metrics}
    return Study(runset, options, methods, baseline, metrics, timing)


def build_document(study: Study, progress: Callable[[str], None] = log.info) -> Document:
    document = Document(study.options.title)
    builders = [("runs", runs_section), ("methods", methods_section), ("curves", curves),
                ("final table", final_table), ("comparison", comparison), ("profiles", profiles),
                ("sensitivity", sensitivity), ("ablations", ablation_grids), ("diagnostics", diagnostics),
                ("provenance", provenance_block)]
    for name, build in builders:
        progress(f"report: {name}")
        section = build(study)
        if section is not None:
            document.sections.append(section)
    return document


# --------------------------------------------------------------------------------------------------- sections
def runs_section(study: Study) -> Section:
    runset = study.runset
    section = Section("Runs")
    section.blocks.append(Text(f"Source `{study.options.source}`: **{len(runset.runs)}** completed runs, "
                               f"**{len(runset.problems)}** failed, unfinished or missing."))
    if runset.problems:
        table = runset.problems_table()
        table["path"] = [p.split("/")[-1] for p in table["path"]]
        section.blocks.append(Table(table.set_index("path"), "Runs left out of every table and plot, and why."))
    return section


def methods_section(study: Study) -> Section | None:
    if not study.methods:
        return None
    options = study.options
    rows = [dict(task=m.task, method=m.name, status=m.status, configuration=describe(m.setting),
                 tried=m.configurations, seeds=", ".join(map(str, m.seeds)) or "–", rule=m.rule,
                 notes="; ".join(m.notes)) for m in study.methods]
    table = pd.DataFrame(rows).set_index("method")
    text = (f"A column of every comparison is a **method**: an optimizer (`optimizer.name`, with "
            f"{', '.join(f'`{k}`' for k in options.method_keys)} where set) on a task. Where the runs hold several "
            f"configurations of it, one represents it: the configuration a selection file names, else the one with "
            f"the best final {analysis.describe_metric(options.metric, options.select_split)} (mean over "
            f"the seeds all its configurations share). **default**: one configuration, the package defaults; "
            f"**fixed**: one configuration set by hand (or tuned elsewhere); **tuned**: selected from `tried`. "
            f"The ablation views below keep every configuration apart.")
    blocks = [Text(text)]
    if options.selection is not None:
        blocks.append(Text(f"Selection file `{options.selection.path}`: {options.selection.rule}."))
    statuses = {m.status for m in study.methods if m.runs}
    if statuses == {DEFAULT}:
        blocks.append(Text("**Every method runs at its package defaults**: this compares defaults, not tuned "
                           "optimizers."))
    if TUNED in statuses and statuses & {DEFAULT, FIXED}:
        tuned = sorted({m.name for m in study.methods if m.status == TUNED})
        others = sorted({m.name for m in study.methods if m.status != TUNED})
        blocks.append(Text(f"**Tuned methods are compared with untuned ones.** Selected from several "
                           f"configurations: {', '.join(tuned)}; not tuned here: {', '.join(others)}. Part of a "
                           f"difference between them can be the tuning."))
    blocks.append(Table(table, "The configuration that represents each method, and how it was chosen."))
    return Section("Methods and configurations", blocks)


def curves(study: Study) -> Section | None:
    if not study.methods:
        return None
    section = Section("Curves")
    for task in study.tasks:
        runs = _top(study, task)
        metric = study.metrics[task]
        panels = []
        for split in ("train", "val"):
            band = analysis.mean_band(runs, metric, x="step", split=split, label=study.label)
            if not band.empty:
                panels.append((study.title(task, split), "step", band))
        for axis in study.axes(task)[1:]:
            band = analysis.mean_band(runs, metric, x=axis, split="train", label=study.label)
            if not band.empty:
                panels.append((study.title(task, "train"), axis, band))
        if panels:
            section.blocks.append(Figure(f"curves_{_slug(task)}", plots.band_panels(panels, task),
                                         _curve_caption(study, task, runs)))
    return section


def final_table(study: Study) -> Section | None:
    if not study.methods:
        return None
    options = study.options
    higher = analysis.higher_is_better(options.metric)
    rows = []
    for task in study.tasks:
        row = analysis.final_loss_table(study.method_runs(task), options.split, study.metrics[task],
                                        options.last_k, label=study.label)
        rows.append(row.rename(index={task: _task_label(study, task)}))
    table = pd.concat(rows).reindex(index=[_task_label(study, t) for t in study.tasks],  # a task where every
                                    columns=sorted({m.name for m in study.methods}))  # run failed: a row of –
    extra = []
    if not higher:
        try:
            extra.append(analysis.log_average(table))
        except ValueError as err:  # a non-positive value has no log
            log.warning("log average left out: %s", err)
    extra.append(analysis.average_rank(table, lower_is_better=not higher))
    full = pd.concat([table, pd.DataFrame(extra)])
    full.index.name = "task"
    full.columns = [_column(study, name) for name in full.columns]
    seeds: dict[str, int] = {}
    for m in study.methods:
        seeds[m.name] = seeds.get(m.name, 0) + len(m.runs)
    text = (f"Final {analysis.describe_metric(options.metric, options.split)} of each method's configuration, "
            f"mean over seeds ({_final_rule(options)}), the log-average over tasks and the average rank (1 = best; "
            f"a missing result ranks last); bold: best. Tasks marked *excess* show loss − the task's optimum. "
            f"Runs per column (all tasks): " + ", ".join(f"{k} {v}" for k, v in sorted(seeds.items())) + ".")
    section = Section(f"Final {analysis.describe_metric(options.metric, options.split)}", [Text(text)])
    best, rank = ("max" if higher else "min"), {"average rank": "min"}
    if len(full.columns) <= 8:
        section.blocks.append(Table(full, best=best, best_along="row", best_for=rank))
    else:  # many methods: one row each, so the table stays readable
        shown = full.T
        shown.index.name = "method"
        section.blocks.append(Table(shown.sort_values("average rank"), best=best, best_along="column",
                                    best_for=rank))
    return section


def comparison(study: Study) -> Section | None:
    baseline, options = study.baseline, study.options
    if baseline is None:
        return None
    frames, notes = [], []
    for task in study.tasks:
        runs = study.method_runs(task)
        if baseline not in {study.label(r) for r in runs}:
            notes.append(f"{task}: no {baseline} run, no comparison.")
            continue
        frames.append(analysis.comparison(runs, baseline, study.metrics[task], options.split, options.last_k,
                                          study.axes(task), study.label, options.interval))
        notes.append(f"{task}: wall-clock {study.timing[task][1]}"
                     + ("." if study.timing[task][0] else " — no time-based comparison."))
    if not frames or all(f.empty for f in frames):
        return None
    shown = _comparison_table(pd.concat(frames, ignore_index=True), study)
    level = f"{stats.LEVEL:.0%}"
    text = (f"Each method against **{baseline}**, paired by seed (only seeds both ran count: `seeds`), with "
            f"{level} {'Student-t' if options.interval == 't' else 'percentile-bootstrap'} intervals over seeds. "
            f"`Δ final`: the mean per-seed difference of the final "
            f"{analysis.describe_metric(options.metric, options.split)} (method − {baseline}; excess loss where the "
            f"task knows its optimum: the same difference). Speedups: how much sooner the method reaches the "
            f"{baseline} seed's final value (smoothed curves, {_final_rule(options)}), in steps and, where they apply, "
            f"forward passes (line searches) and wall-clock; geometric mean over seeds, with an interval only when "
            f"every seed reached the target (`reached`). Verdicts: **better** / **worse** when the interval "
            f"excludes no difference, else **indistinguishable**; – with one seed.")
    blocks = [Text(text), Table(shown), Text(" ".join(notes))]
    return Section(f"Comparison with {baseline}", blocks)


def profiles(study: Study) -> Section | None:
    baseline, options = study.baseline, study.options
    if baseline is None:
        return None
    axis = FORWARDS if any(FORWARDS in study.axes(t) for t in study.tasks) else "step"
    runs = [r for t in study.tasks for r in study.method_runs(t)]
    targets = {}
    for task in study.tasks:  # the level every baseline seed reached: its worst seed's final value
        finals = analysis.final_values([r for r in study.method_runs(task) if study.label(r) == baseline],
                                       options.split, study.metrics[task], options.last_k, study.label)["value"]
        if finals.notna().any():
            targets[task] = float(finals.min() if analysis.higher_is_better(study.metrics[task]) else finals.max())
    if not targets:
        return None
    times = pd.concat([analysis.time_to_target_table(
        [r for r in runs if r.task == task], targets[task], study.metrics[task], options.split, axis, study.label,
        options.last_k) for task in targets])
    profile = analysis.performance_profiles(times)
    scores = analysis.integrated_profile_score(profile).sort_values(ascending=False)
    text = (f"AlgoPerf-style performance profiles over {len(times)} task(s), on **{AXES[axis]}**: the fraction of "
            f"tasks on which a method reaches the target (per task, the final "
            f"{analysis.describe_metric(options.metric, options.split)} of {baseline}'s worst seed, a level all its "
            f"seeds reached) within τ × the {AXES[axis]} of the best "
            f"method (median over seeds; never reaching it counts as ∞), for τ ≤ 4; the score is the normalised area "
            f"under the profile (1 = best everywhere).")
    ratio = analysis.performance_ratios(times).T
    score_table = pd.concat([scores.rename("score"), ratio.add_prefix("τ on ")], axis=1).sort_values(
        "score", ascending=False)
    score_table.index.name = "method"
    return Section("Performance profiles", [
        Text(text), Figure("performance_profiles", plots.profiles(profile, scores, "performance profiles", axis)),
        Table(score_table, f"Integrated score and, per task, the {AXES[axis]}-to-target ratio to the best "
                           f"(∞: never).")])


def sensitivity(study: Study) -> Section | None:
    runs = list(study.runset)
    if not any("lr" in r.varying for r in runs):
        return None
    options = study.options
    section = Section("Learning-rate sensitivity", [Text(
        f"Final {analysis.describe_metric(options.metric, options.split)} against the learning rate, mean ± std "
        f"over seeds; one line per optimizer and per value of the other varied hyperparameters. `compared`: the lr "
        f"of the configuration that represents the method; `best here`: the lr with the best mean on this split "
        f"(they differ when the selection used another split or other seeds).")])
    for task in study.tasks:
        task_runs = [r for r in runs if r.task == task and "lr" in r.varying]
        if not task_runs:
            continue
        metric = study.metrics[task]
        frame = analysis.sensitivity(task_runs, "lr", metric, options.split, options.last_k).dropna(subset=["mean"])
        if frame.empty:  # no value on this split (a task without a test split)
            continue
        section.blocks.append(Figure(f"lr_{_slug(task)}", plots.sensitivity(frame, "lr", task, study.title(task))))
        pick = frame.groupby("optimizer")["mean"].idxmax() if analysis.higher_is_better(metric) else \
            frame.groupby("optimizer")["mean"].idxmin()
        best = frame.loc[pick].set_index("optimizer")[["lr", "mean", "n"]]
        best.columns = ["best here", "final", "seeds"]
        grid = frame.groupby("optimizer")["lr"].agg(["min", "max"])
        best["grid"] = [f"{grid.loc[o, 'min']:g}–{grid.loc[o, 'max']:g}" for o in best.index]
        compared = {analysis.sensitivity_label(m.runs[0], "lr"): m.runs[0].hparams.get("lr")
                    for m in study.methods if m.task == task and m.runs}
        best.insert(0, "compared", [compared.get(o, math.nan) for o in best.index])
        section.blocks.append(Table(best, f"{task}: learning rates per optimizer."))
    return section


def ablation_grids(study: Study) -> Section | None:
    runs = list(study.runset)
    if not any(r.varying for r in runs):
        return None
    options = study.options
    higher = analysis.higher_is_better(options.metric)
    section = Section("Ablations", [Text(
        f"Every configuration apart: the final {analysis.describe_metric(options.metric, options.split)} (mean "
        f"over seeds) over the hyperparameters each optimizer was swept on — a heatmap where exactly two vary "
        f"(e.g. base × φ, β1 × β2, lr × weight decay; best cell framed) — and of every configuration "
        f"(mean ± std).")])
    for task in study.tasks:
        task_runs = [r for r in runs if r.task == task]
        metric, label = study.metrics[task], study.title(task)
        for _, optimizer, grid in ablations.two_axis_grids(task_runs, options.split, metric, options.last_k):
            name = f"grid_{_slug(task)}_{_slug(optimizer)}"
            section.blocks.append(Figure(name, plots.heatmap(grid, f"{optimizer} · {task}", label, higher)))
            section.blocks.append(Table(grid, f"{optimizer} on {task}: final {label}.",
                                        best="max" if higher else "min", best_along="row"))
        summary = ablations.config_summary(task_runs, options.split, metric, options.last_k)
        rows = summary.set_index("label")[["mean", "std", "seeds"]]
        if 1 < len(rows) <= 60:
            section.blocks.append(Figure(f"configs_{_slug(task)}", plots.bars(rows, task, label, higher)))
    return section


def diagnostics(study: Study) -> Section | None:
    runs = [r for t in study.tasks for r in study.method_runs(t)]
    present = [m for m in DIAGNOSTICS if any(m in r.metrics.columns for r in runs)]
    if not present:
        return None
    section = Section("Optimizer diagnostics", [Text(
        "Diagnostics the optimizers report over training, per method (mean and min–max band over seeds).")])
    for task in study.tasks:
        for metric in present:
            having = [r for r in _top(study, task) if not r.curve(metric).empty]
            band = analysis.mean_band(having, metric, x="step", split="train", label=study.label)
            if not band.empty:
                section.blocks.append(Figure(f"{_slug(metric)}_{_slug(task)}", plots.band_panels(
                    [(DIAGNOSTICS[metric], "step", band)], f"{DIAGNOSTICS[metric]} · {task}",
                    log_y=metric == "opt/step_size")))
    return section


def provenance_block(study: Study) -> Section:
    runset, options = study.runset, study.options
    every = list(runset.runs) + [p.run for p in runset.problems if p.run is not None]
    fixed = provenance.common_config(every)
    varying = provenance.varying_config(every)
    seeds = sorted({r.seed for r in every if r.seed is not None})
    commit = environment.git_commit()
    section = Section("Provenance", [Text(
        f"Report built {dt.datetime.now().isoformat(timespec='seconds')} from `{options.source}` with code at commit "
        f"`{commit}`, on {environment.host_description()}. Seeds: {seeds}. "
        + provenance.code_versions(every, commit))])
    if varying:
        section.blocks.append(Text("Varied across runs: " + "; ".join(
            f"`{k}` ∈ {{{', '.join(v)}}}" for k, v in varying.items()) + "."))
    if fixed:
        section.blocks.append(Text("Fixed config of all runs:\n\n```yaml\n" + yaml.safe_dump(
            fixed, sort_keys=True, width=110).strip() + "\n```"))
    table = provenance.runs_table(every)
    if not table.empty:
        section.blocks.append(Table(table, "Every run: status, identity (W&B run id), device, threads and load "
                                           "average when recorded, dates (start: config written; end: summary "
                                           "last written)."))
    return section


# ---------------------------------------------------------------------------------------------------- helpers
def _shown_metric(runs: Sequence[Run], metric: str) -> str:
    """Excess loss instead of loss where every run of the task knows the task's optimum."""
    if metric == "loss" and runs and all(r.optimum is not None for r in runs):
        return EXCESS_LOSS
    return metric


def _check_logged(runs: Sequence[Run], metric: str, split: str, option: str) -> None:
    if any(not r.curve(metric, split).empty for r in runs):
        return
    logged = sorted({f"{s}/{c}" for r in runs for s in r.metrics["split"].unique() for c in r.metrics.columns
                     if c not in ("step", "split") and r.metrics.loc[r.metrics["split"] == s, c].notna().any()})
    raise ReportError(f"{option}: no run logged {metric!r} on the {split!r} split; logged: {', '.join(logged)}")


def _task_label(study: Study, task: str) -> str:
    return f"{task} (excess)" if study.metrics[task] == EXCESS_LOSS else task


def _column(study: Study, name: str) -> str:
    """A table column: the method, with its status when every task agrees on it (else "mixed")."""
    statuses = {m.status for m in study.methods if m.name == name}
    return f"{name} ({statuses.pop() if len(statuses) == 1 else 'mixed'})"


def _final_rule(options: Options) -> str:
    if options.split == analysis.SMOOTHED_SPLIT and options.last_k > 1:
        return f"training values: mean of the last {options.last_k} logged windows"
    return "the last logged value"


def _comparison_table(long: pd.DataFrame, study: Study) -> pd.DataFrame:
    """One row per (method, task): seeds, Δ final with interval and verdict, then per axis speedup, verdict, reached."""
    rows = []
    for (task, name), group in long.groupby(["task", "optimizer"], sort=True):
        by_quantity = group.set_index("quantity")
        final = by_quantity.loc[analysis.FINAL]
        row = {"method": name, "task": task, "seeds": int(final["n"]),
               "Δ final [95% CI]": _with_interval(final, "{:+.4g}"), "final": final["verdict"]}
        for axis in [q for q in by_quantity.index if q != analysis.FINAL]:
            speed = by_quantity.loc[axis]
            row[f"{AXES[axis]} speedup"] = _with_interval(speed, "{:.2f}×")
            row[AXES[axis]] = speed["verdict"]
            row[f"reached ({AXES[axis]})"] = f"{int(speed['reached'])}/{int(speed['n'])}"
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")


def _with_interval(row: pd.Series, template: str) -> str:
    if math.isnan(row["estimate"]):
        return "–"
    if math.isnan(row["low"]):
        return template.format(row["estimate"])
    return f"{template.format(row['estimate'])} [{template.format(row['low'])}, {template.format(row['high'])}]"


def _top(study: Study, task: str) -> list[Run]:
    """The runs of the ``MAX_CURVES`` methods with the best mean final value on ``task`` (all when fewer)."""
    runs = study.method_runs(task)
    finals = analysis.final_values(runs, study.options.split, study.metrics[task], study.options.last_k,
                                   study.label).groupby("optimizer")["value"].mean()
    if len(finals) <= MAX_CURVES:
        return runs
    best = finals.nlargest if analysis.higher_is_better(study.metrics[task]) else finals.nsmallest
    keep = set(best(MAX_CURVES).index)
    return [r for r in runs if study.label(r) in keep]


def _curve_caption(study: Study, task: str, shown: list[Run]) -> str:
    metric = analysis.METRIC_NAMES.get(study.metrics[task], study.metrics[task])
    text = (f"{metric.capitalize()} of each method's configuration, training (window means) beside validation, "
            f"mean over seeds with a min–max band")
    if study.metrics[task] == EXCESS_LOSS:
        text += "; log axis of the gap to the task's optimum"
    axes = study.axes(task)
    if FORWARDS in axes:
        text += "; against forward passes too (a line search's trial points cost one each)"
    text += f". Wall-clock {study.timing[task][1]}"
    text += "." if "train_time" in axes else ": no time axis."
    total = len({m.name for m in study.methods if m.task == task})
    kept = len({study.label(r) for r in shown})
    return text + (f" The {kept} best of {total} methods are drawn." if kept < total else "")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()
