"""What a tuning worker does: claim trials and run them until the budget is spent, then select and confirm.

A trial is one run per tuning seed of the config its sampled values make (:meth:`Plan.config`); its value is the
mean final validation metric over those runs. A diverged run makes the trial's value the worst possible (it
counts as tried and can never be selected); a run refused by its own checks marks the trial failed. When no trial
is left to claim and no other worker is on one, the worker selects the best trial, re-runs its configuration on
the confirmation seeds (a confirmation run another worker holds is left to it), and writes ``selection.json``.
Every step goes through run directories, so running the same command again resumes whatever was interrupted.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial

from research_optim.errors import UserError
from research_optim.jobs import run_progress
from research_optim.run_dir import RunLock, run_dir
from research_optim.tracking import MetricsFile, read_summary
from research_optim.tune.plan import Plan
from research_optim.tune.selection import best_trial, edge_notes, selection_config, write_selection
from research_optim.tune.study import Claim

POLL_S = 5.0  # how often a worker looks again at a run directory another process holds


class Stopped(Exception):
    """A run was preempted (SIGTERM, SLURM's time limit): the worker stops; its trial stays claimed and is taken
    over — and resumed from its checkpoint — by the next worker (a requeued SLURM job: the same one)."""


@dataclass
class TrialResult:
    value: float | None  # None: failed
    status: str          # completed | diverged | failed
    runs: list[str]
    error: str | None = None


def execute(cfg: DictConfig, in_this_process: bool, wait: bool) -> dict[str, Any]:
    """Run ``cfg`` (or find it completed); its summary. A run directory another process holds is waited for
    (``wait``) or left to it (status "elsewhere"); a run refused by its own checks is "failed"."""
    from research_optim.app import run

    directory, waited = run_dir(cfg), False
    while (owner := RunLock(directory).holder()) is not None:
        if not wait:
            return {"status": "elsewhere", "error": f"held by {owner}", "run_dir": str(directory)}
        if not waited:
            print(f"waiting for {directory.name}, which {owner} is running", flush=True)
        waited = True
        time.sleep(POLL_S)
    try:
        summary = run(cfg, in_this_process)
    except UserError as err:
        return {"status": "failed", "error": str(err), "run_dir": str(directory)}
    if summary["status"] == "preempted":
        raise Stopped(f"run {directory} was preempted at step {summary.get('step')}")
    return summary


def run_trial(plan: Plan, claim: Claim, in_this_process: bool) -> TrialResult:
    values, runs = [], []
    for seed in plan.seeds:
        summary = execute(plan.config(claim.params, seed), in_this_process, wait=True)
        runs.append(summary["run_dir"])
        if summary["status"] == "diverged":
            return TrialResult(plan.worst, "diverged", runs, summary.get("error"))
        if summary["status"] != "completed":
            return TrialResult(None, "failed", runs, summary.get("error"))
        values.append(summary[f"val_{plan.metric}"])
    return TrialResult(statistics.fmean(values), "completed", runs)


def work(plan: Plan, in_this_process: bool = False) -> int:
    """Run trials until none is left, then finish the study if no other worker is still on one; the exit code."""
    study = plan.study
    print(study.progress(plan.budget), flush=True)
    while (claim := study.claim(plan.space.distributions, plan.sampler, plan.study_seed, plan.budget)) is not None:
        if claim.previous_owner:
            print(f"trial {claim.number}: taken over from {claim.previous_owner} (gone); its runs resume from "
                  "their checkpoints", flush=True)
        result = run_trial(plan, claim, in_this_process)
        study.tell(claim.number, result.value, {"status": result.status, "runs": result.runs,
                                                **({"error": result.error} if result.error else {})})
        value = "" if result.value is None else f" → validation {plan.metric} {result.value:.4g}"
        print(f"trial {claim.number} [{plan.space.describe(claim.params)}]: {result.status}{value}"
              + (f" ({result.error})" if result.error and result.status == "failed" else ""), flush=True)
    others = study.running_elsewhere()
    if others:
        print(f"still running in other workers: trial {', '.join(str(t.number) for t in others)}; the last worker "
              "to finish selects and confirms", flush=True)
        return 0
    return finish(plan, in_this_process)


def finish(plan: Plan, in_this_process: bool) -> int:
    """Select the best trial, confirm it on the confirmation seeds, write selection.json, say what happened."""
    trials = plan.study.trials()
    best = best_trial(trials, plan.direction)
    if best is not None:
        for seed in plan.confirm_seeds:
            execute(plan.config(best.params, seed), in_this_process, wait=False)
        run_config = plan.config(best.params, plan.confirm_seeds[0])
        keys = plan.space.settings_keys(run_config) + [key for key in plan.method_keys
                                                       if OmegaConf.select(run_config, key) is not None]
        write_selection(plan.sweep_dir, plan.method_keys, {
            "task": plan.task, "optimizer": str(plan.base.optimizer.name),
            "config": selection_config(run_config, keys), "seeds": plan.confirm_seeds, "trials": len(trials),
            "notes": [protocol_note(plan, trials, best), *edge_notes(plan.space, best.params, plan.edge)]})
    lines, code = outcome(plan)
    print("\n".join(lines), flush=True)
    return code


def protocol_note(plan: Plan, trials: list[FrozenTrial], best: FrozenTrial) -> str:
    """How the entry was chosen, for the selection file's notes."""
    sampler = {"qmc": "Sobol QMC", "tpe": "TPE"}[plan.sampler]
    return (f"{len(trials)} {sampler} trials ({_count(trials)}), selected on the mean final validation "
            f"{plan.metric} of tuning seeds {_seeds(plan.seeds)}: trial {best.number}, {best.value:.6g}")


def outcome(plan: Plan) -> tuple[list[str], int]:
    """What the study holds now, read from its journal and run directories; exit code 1 when a trial failed or a
    confirmation run diverged, failed or was interrupted."""
    study, trials = plan.study, plan.study.trials()
    lines = [f"study    {study.name}: {len(trials)} of {plan.budget} trials ({_count(trials)})"]
    failed = [t for t in trials if t.user_attrs.get("status") == "failed"]
    lines += [f"         trial {t.number} failed: {t.user_attrs.get('error')}" for t in failed]
    best = best_trial(trials, plan.direction)
    if best is None:
        lines.append("best     none: no trial completed, so nothing is selected or confirmed")
        return lines, 1
    lines.append(f"best     trial {best.number}: {plan.space.describe(best.params)} → validation {plan.metric} "
                 f"{best.value:.4g} (tuning seeds {_seeds(plan.seeds)})")
    lines += [f"EDGE     {note}" for note in edge_notes(plan.space, best.params, plan.edge)]
    confirmation, problems = _confirmation(plan, best.params)
    lines += confirmation
    lines += [f"selection {plan.sweep_dir / 'selection.json'}",
              f"report   python -m research_optim.report {plan.sweep_dir} --split val   (held-out test: --split test)"]
    return lines, 1 if failed or problems else 0


def _confirmation(plan: Plan, params: dict[str, Any]) -> tuple[list[str], bool]:
    """Lines on the confirmation runs (metrics, the workload's validation target), and whether any went wrong."""
    finals, lines, problems = [], [], False
    target = plan.base.get("workload", {}).get("target")
    reached = []
    for seed in plan.confirm_seeds:
        directory = run_dir(plan.config(params, seed))
        status, progress = run_progress(directory)
        if status != "completed":
            problems |= status in ("diverged", "failed", "interrupted")
            lines.append(f"         seed {seed}: {status} at step {progress} ({directory})")
            continue
        finals.append(read_summary(directory)["final"])
        if target is not None:
            reached.append(_step_reaching(directory, target))
    head = f"confirm  seeds {_seeds(plan.confirm_seeds)}: {len(finals)} completed"
    for split in ("val", "test"):
        values = [f[f"{split}_{plan.metric}"] for f in finals if f"{split}_{plan.metric}" in f]
        if values:
            spread = f" ± {statistics.stdev(values):.2g}" if len(values) > 1 else ""
            name = "validation" if split == "val" else "test"
            head += f"; {name} {plan.metric} {statistics.fmean(values):.4g}{spread}"
    if len(finals) > 1:
        head += " (mean ± sd over seeds)"
    if target is not None and finals:
        steps = [s for s in reached if s is not None]
        head += (f"; validation target {target:g} reached on {len(steps)}/{len(finals)} seeds"
                 + (f" (median step {statistics.median(steps):g})" if steps else ""))
    return [head, *lines], problems


def _step_reaching(directory: Path, target: float) -> int | None:
    """The first evaluation step whose validation loss is at or below ``target`` (None: never)."""
    return next((r["step"] for r in MetricsFile(directory / "metrics.jsonl").records()
                 if r["split"] == "val" and r["loss"] <= target), None)


def _count(trials: list[FrozenTrial]) -> str:
    counts = {status: sum(t.user_attrs.get("status") == status for t in trials)
              for status in ("completed", "diverged", "failed")}
    running = len(trials) - sum(counts.values())
    return ", ".join(f"{n} {status}" for status, n in counts.items()) + (f", {running} running" if running else "")


def _seeds(seeds: list[int]) -> str:
    return ", ".join(map(str, seeds))
