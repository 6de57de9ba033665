"""The report's sections, each a pure function of the loaded runs (see :func:`build_document`)."""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import yaml

from research_optim import environment
from research_optim.report import ablations, analysis, plots, provenance
from research_optim.report.document import Document, Figure, Section, Table, Text
from research_optim.report.runs import Run, RunSet

log = logging.getLogger(__name__)

MAX_CURVES = 12  # labels per plot; beyond that the best ones by final loss are drawn (and the caption says so)
DIAGNOSTICS = {
    "opt/masked_fraction": "masked fraction (cautious)",
    "opt/step_size": "η, line-search step size (SaLSA / SLS)",
    "opt/forwards": "forward passes per step (line searches)",
    "opt/cadence": "line-search cadence (SaLSA)",
    "opt/backtracks": "backtracks per step (line searches)",
    "opt/xy_gap": "x–y gap (Schedule-Free)",
    "opt/lr_applied": "applied lr (Schedule-Free)",
}


@dataclass
class Options:
    """What the command line chooses: ``baseline`` (a run label; default adamw when present), ``last_k``."""

    title: str = "Optimizer report"
    source: str = ""
    baseline: str | None = None
    last_k: int = 1


def build_document(runset: RunSet, options: Options, progress: Callable[[str], None] = log.info) -> Document:
    runs = list(runset)
    document = Document(options.title)
    builders = [("problems", problems), ("curves", curves), ("final table", final_table),
                ("speedup", speedup), ("profiles", profiles), ("sensitivity", sensitivity),
                ("ablations", ablation_grids), ("diagnostics", diagnostics), ("provenance", provenance_block)]
    for name, build in builders:
        progress(f"report: {name}")
        section = build(runset, runs, options) if name in ("problems", "provenance") else build(runs, options)
        if section is not None:
            document.sections.append(section)
    return document


def default_baseline(runs: Sequence[Run], requested: str | None) -> str | None:
    labels = sorted({r.label for r in runs})
    if requested is not None:
        if requested not in labels:
            raise ValueError(f"baseline {requested!r} is not a run label; labels: {labels}")
        return requested
    for preferred in ("adamw",):
        if preferred in labels:
            return preferred
    return labels[0] if labels else None


# --------------------------------------------------------------------------------------------------- sections
def problems(runset: RunSet, runs: list[Run], options: Options) -> Section:
    section = Section("Runs")
    section.blocks.append(Text(f"Source `{options.source}`: **{len(runs)}** completed runs, "
                               f"**{len(runset.problems)}** failed, unfinished or missing."))
    if runset.problems:
        table = runset.problems_table()
        table["path"] = [p.split("/")[-1] for p in table["path"]]
        section.blocks.append(Table(table.set_index("path"), "Runs left out of every table and plot, and why."))
    return section


def curves(runs: list[Run], options: Options) -> Section | None:
    if not runs:
        return None
    section = Section("Training curves")
    for task in _tasks(runs):
        task_runs = _top_labels([r for r in runs if r.task == task], options)
        bands = [(x, analysis.mean_band(task_runs, "loss", x=x, split="train")) for x in ("step", "train_time")]
        bands = [(x, b) for x, b in bands if not b.empty]
        if bands:
            section.blocks.append(Figure(f"curves_{_slug(task)}", plots.band_panels(bands, "training loss", task),
                                         _curve_caption(runs, task_runs, task)))
        val = analysis.mean_band(task_runs, "loss", x="step", split="val")
        if not val.empty and val.groupby("optimizer").size().max() > 1:
            section.blocks.append(Figure(f"val_{_slug(task)}", plots.band_panels([("step", val)], "validation loss",
                                                                                   task), "Validation loss."))
    return section


def final_table(runs: list[Run], options: Options) -> Section | None:
    if not runs:
        return None
    table = analysis.final_loss_table(runs, last_k=options.last_k)
    extra = []
    try:
        extra.append(analysis.log_average(table))
    except ValueError as err:  # a non-positive loss has no log
        log.warning("log average left out: %s", err)
    extra.append(analysis.average_rank(table))
    full = pd.concat([table, pd.DataFrame(extra)])
    full.index.name = "task"
    seeds = analysis.final_values(runs, last_k=options.last_k).groupby("optimizer")["seed"].nunique()
    text = (f"Final training loss (mean over seeds of the last {options.last_k} logged value(s)), the log-average "
            f"over tasks and the average rank (1 = best); bold: best. Seeds per column: "
            + ", ".join(f"{k} {v}" for k, v in seeds.items()) + ".")
    section = Section("Final training loss (SaLSA-paper table)", [Text(text)])
    if len(full.columns) <= 8:
        section.blocks.append(Table(full, best="min", best_along="row"))
    else:  # many configurations: one row each, so the table stays readable
        shown = full.T
        shown.index.name = "optimizer"
        section.blocks.append(Table(shown.sort_values("average rank"), best="min", best_along="column"))
    return section


def speedup(runs: list[Run], options: Options) -> Section | None:
    baseline = default_baseline(runs, options.baseline)
    if baseline is None or len({r.label for r in runs}) < 2:
        return None
    table = analysis.speedup_vs_baseline(runs, baseline, last_k=options.last_k)
    if table.empty:
        return None
    shown = table.reset_index()
    shown["speedup"] = [f"{m:.2f}× ± {s:.2f}" if not math.isnan(s) else f"{m:.2f}×"
                        for m, s in zip(shown["mean"], shown["std"])]
    shown["range"] = [f"{lo:.2f}–{hi:.2f}" for lo, hi in zip(shown["min"], shown["max"])]
    shown["reached"] = [f"{r}/{n}" for r, n in zip(shown["n_reached"], shown["n"])]
    shown = shown.set_index("optimizer")[["task", "axis", "speedup", "range", "reached", "paired"]]
    text = (f"Steps (and train wall-clock) a method needs to reach **{baseline}**'s final training loss, as a "
            f"multiple of what {baseline} needs (C-Optim's \"1.47×\"): mean ± std and range over seeds (paired by "
            f"seed when the seeds are shared); a run that never reaches the target counts as 0×.")
    return Section(f"Speedup vs {baseline}", [Text(text), Table(shown)])


def profiles(runs: list[Run], options: Options) -> Section | None:
    baseline = default_baseline(runs, options.baseline)
    if baseline is None or len({r.label for r in runs}) < 2:
        return None
    finals = analysis.final_loss_table(runs, last_k=options.last_k)
    targets = finals[baseline].dropna().to_dict() if baseline in finals else {}
    if not targets:
        return None
    times = analysis.time_to_target_table(runs, targets, split="train", x="train_time")
    profile = analysis.performance_profiles(times)
    scores = analysis.integrated_profile_score(profile).sort_values(ascending=False)
    text = (f"AlgoPerf-style performance profiles over {len(times)} task(s): the fraction of tasks on which a method "
            f"reaches the target (per task, {baseline}'s final training loss) within τ × the fastest method's "
            f"train wall-clock (median over seeds; never reaching it counts as ∞), for τ ≤ 4; the score is the "
            f"normalised area under the profile (1 = fastest everywhere).")
    ratio = analysis.performance_ratios(times).T
    ratio.index.name = "optimizer"
    score_table = pd.concat([scores.rename("score"), ratio.add_prefix("τ on ")], axis=1).sort_values(
        "score", ascending=False)
    score_table.index.name = "optimizer"
    return Section("Performance profiles", [
        Text(text), Figure("performance_profiles", plots.profiles(profile, scores, "performance profiles")),
        Table(score_table, "Integrated score and, per task, the time-to-target ratio to the fastest (∞: never).")])


def sensitivity(runs: list[Run], options: Options) -> Section | None:
    if not any("lr" in r.varying for r in runs):
        return None
    section = Section("Learning-rate sensitivity", [Text(
        "Final training loss against the learning rate, mean ± std over seeds; one line per optimizer and per "
        "value of the other varied hyperparameters.")])
    frame = analysis.sensitivity([r for r in runs if "lr" in r.varying], "lr", last_k=options.last_k)
    for task, rows in frame.groupby("task", sort=True):
        section.blocks.append(Figure(f"lr_{_slug(task)}", plots.sensitivity(rows, "lr", task)))
        best = rows.loc[rows.groupby("optimizer")["mean"].idxmin()].set_index("optimizer")[["lr", "mean", "std", "n"]]
        best.columns = ["best lr", "final loss", "std", "seeds"]
        section.blocks.append(Table(best, f"{task}: best learning rate per optimizer."))
    return section


def ablation_grids(runs: list[Run], options: Options) -> Section | None:
    if not any(r.varying for r in runs):
        return None
    section = Section("Ablations", [Text(
        "Final training loss (mean over seeds) over the hyperparameters each optimizer was swept on: a heatmap "
        "where exactly two vary (e.g. base × φ, β1 × β2, lr × weight decay; best cell framed), and the final "
        "loss of every configuration (mean ± std).")])
    for task, optimizer, grid in ablations.two_axis_grids(runs, last_k=options.last_k):
        name = f"grid_{_slug(task)}_{_slug(optimizer)}"
        section.blocks.append(Figure(name, plots.heatmap(grid, f"{optimizer} · {task}")))
        section.blocks.append(Table(grid, f"{optimizer} on {task}: final training loss.", best="min",
                                    best_along="row"))
    summary = ablations.config_summary(runs, last_k=options.last_k)
    for task, rows in summary.groupby("task", sort=True):
        rows = rows.set_index("label")[["mean", "std", "seeds"]]
        if len(rows) <= 60:
            section.blocks.append(Figure(f"configs_{_slug(task)}", plots.bars(rows, task)))
    return section


def diagnostics(runs: list[Run], options: Options) -> Section | None:
    present = [m for m in DIAGNOSTICS if any(m in r.metrics.columns for r in runs)]
    if not present:
        return None
    section = Section("Optimizer diagnostics", [Text(
        "Diagnostics the optimizers report over training (mean and min–max band over seeds).")])
    for task in _tasks(runs):
        for metric in present:
            having = _top_labels([r for r in runs if r.task == task and not r.curve(metric).empty], options)
            band = analysis.mean_band(having, metric, x="step", split="train")
            if not band.empty:
                section.blocks.append(Figure(f"{_slug(metric)}_{_slug(task)}", plots.band_panels(
                    [("step", band)], DIAGNOSTICS[metric], f"{DIAGNOSTICS[metric]} · {task}",
                    log_y=metric == "opt/step_size")))
    return section


def provenance_block(runset: RunSet, runs: list[Run], options: Options) -> Section:
    every = runs + [p.run for p in runset.problems if p.run is not None]
    fixed = provenance.common_config(every)
    varying = provenance.varying_config(every)
    seeds = sorted({r.seed for r in every if r.seed is not None})
    section = Section("Provenance", [Text(
        f"Report built {dt.datetime.now().isoformat(timespec='seconds')} from `{options.source}` with code at commit "
        f"`{environment.git_commit()}`, on {environment.host_description()}. Seeds: {seeds}.")])
    if varying:
        section.blocks.append(Text("Varied across runs: " + "; ".join(
            f"`{k}` ∈ {{{', '.join(v)}}}" for k, v in varying.items()) + "."))
    if fixed:
        section.blocks.append(Text("Fixed config of all runs:\n\n```yaml\n" + yaml.safe_dump(
            fixed, sort_keys=True, width=110).strip() + "\n```"))
    table = provenance.runs_table(every)
    if not table.empty:
        section.blocks.append(Table(table, "Every run: status, identity (W&B run id), device, dates (start: config "
                                           "written; end: summary last written)."))
    return section


# ---------------------------------------------------------------------------------------------------- helpers
def _tasks(runs: Sequence[Run]) -> list[str]:
    return sorted({r.task for r in runs})


def _top_labels(runs: list[Run], options: Options) -> list[Run]:
    """The runs of the ``MAX_CURVES`` labels with the lowest mean final loss (all runs when there are fewer)."""
    finals = analysis.final_values(runs, last_k=options.last_k).groupby("optimizer")["value"].mean()
    if len(finals) <= MAX_CURVES:
        return runs
    keep = set(finals.nsmallest(MAX_CURVES).index)
    return [r for r in runs if r.label in keep]


def _curve_caption(runs: list[Run], shown: list[Run], task: str) -> str:
    total = len({r.label for r in runs if r.task == task})
    kept = len({r.label for r in shown})
    text = "Training loss vs step and vs train wall-clock: mean over seeds, band min–max."
    return text + (f" The {kept} best of {total} configurations are drawn." if kept < total else "")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()
