"""Methods: what a column of a comparison is, and which configuration of it is compared.

A *method* is an optimizer on a task: the runs with one ``optimizer.name`` and one value of each *method key*
(by default ``optimizer.base``, so that cautious AdamW and cautious Lion are two methods; ``--method-keys
optimizer.phi`` makes every φ one too). Its runs may hold several *configurations* — settings that differ other
than by seed (lr, weight decay, schedule, ...). One configuration represents the method in every comparison,
chosen by one stated rule:

1. a **selection file** (``selection.json`` in the report's source, or ``--selection``), written by a tuning
   protocol: the configuration it names, on the seeds it names (see :func:`read_selection` for the format);
2. otherwise, with several configurations, **the best final value of the metric on the selection split**
   (validation by default), averaged over the seeds every eligible configuration has (the tuning seeds);
   a configuration with a failed, diverged or unfinished run is not eligible (it still counts as tried);
3. a single configuration represents itself: **default** when its optimizer node equals the package's
   ``conf/optimizer/<name>.yaml``, **fixed** otherwise (set by hand, or tuned outside this report).

The ablation views of a report keep every configuration apart instead (``Run.label``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from research_optim.report import ReportError
from research_optim.report.analysis import describe_metric, higher_is_better, run_final
from research_optim.report.runs import Run, flatten, format_value

DEFAULT_METHOD_KEYS = ("optimizer.base",)
SELECTION_FILE = "selection.json"
DEFAULT, FIXED, TUNED = "default", "fixed", "tuned"
OPTIMIZER_CONFIGS = Path(__file__).resolve().parents[2] / "conf" / "optimizer"
_ENTRY_KEYS = {"task", "optimizer", "config", "seeds", "trials", "notes"}


@dataclass
class Method:
    """One column of a comparison on one task, represented by one configuration.

    ``runs`` are that configuration's completed runs on the seeds it is compared on; ``setting`` the values that
    tell it apart from the method's other configurations (empty when there is one); ``configurations`` how many
    were tried; ``status`` default / fixed / tuned; ``rule`` how it was chosen; ``notes`` what a reader must know.
    """

    task: str
    name: str
    runs: list[Run]
    setting: dict[str, Any]
    configurations: int
    status: str
    rule: str
    notes: list[str] = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        return sorted({run.seed for run in self.runs if run.seed is not None})


@dataclass
class Selection:
    """A selection file: the rule in words and one entry per selected (task, optimizer) configuration."""

    path: Path
    rule: str
    entries: list[dict[str, Any]]


@dataclass
class _Configuration:
    settings: dict[str, Any]  # the full settings (Run.settings) shared by its runs
    runs: list[Run]  # completed
    failed: list[Run]  # did not complete

    @property
    def seeds(self) -> set[int]:
        return {run.seed for run in self.runs if run.seed is not None}


# ------------------------------------------------------------------------------------------------ names
def method_name(run: Run, keys: Sequence[str] = DEFAULT_METHOD_KEYS) -> str:
    """``optimizer.name`` plus ``key=value`` for each method key the run has a plain value for."""
    settings = run.settings
    parts = [run.optimizer] + [f"{short_key(key)}={format_value(settings[key])}" for key in keys
                               if isinstance(settings.get(key), (str, int, float, bool))]
    return " ".join(parts)


def describe(setting: Mapping[str, Any]) -> str:
    """``lr=0.003 weight_decay=0.1`` (optimizer keys without their prefix), or ``–`` for no setting."""
    return " ".join(f"{short_key(k)}={format_value(v)}" for k, v in sorted(setting.items())) or "–"


def short_key(key: str) -> str:
    return key.removeprefix("optimizer.")


def resolve_baseline(names: Sequence[str], requested: str | None) -> str | None:
    """The method every other is compared with: ``requested``, else adamw when present; None with < 2 methods.

    Raises :class:`ReportError` listing the candidates when ``requested`` is not a method, or when there are
    several methods, no adamw and no request — never a silent pick.
    """
    names = sorted(set(names))
    if requested is not None:
        if requested not in names:
            raise ReportError(f"--baseline {requested!r} is not a method of this report; methods: "
                              f"{', '.join(names)} (a configuration label needs --method-keys for its keys)")
        return requested
    if len(names) < 2:
        return None
    if "adamw" in names:
        return "adamw"
    raise ReportError(f"several methods and no adamw: choose the baseline with --baseline, one of: "
                      f"{', '.join(names)}")


# -------------------------------------------------------------------------------------------- selection
def choose_methods(
    runs: Iterable[Run],
    failed: Iterable[Run] = (),
    metrics: Mapping[str, str] | None = None,
    split: str = "val",
    last_k: int = 1,
    keys: Sequence[str] = DEFAULT_METHOD_KEYS,
    selection: Selection | None = None,
) -> list[Method]:
    """Every (task, method) of ``runs`` with its representative configuration, sorted by task then name.

    ``failed`` are the runs that did not complete (they make a configuration ineligible); ``metrics`` maps each
    task to the metric the selection compares (default ``loss``), on ``split`` (final value as in
    :func:`~research_optim.report.analysis.run_final` with ``last_k``). Raises :class:`ReportError` for a selection
    file entry that matches no configuration or several, or when no configuration has the metric.
    """
    groups: dict[tuple[str, str], list[_Configuration]] = {}
    for run, ok in [(r, True) for r in runs] + [(r, False) for r in failed]:
        configurations = groups.setdefault((run.task, method_name(run, keys)), [])
        settings = run.settings
        match = next((c for c in configurations if _same(c.settings, settings)), None)
        if match is None:
            match = _Configuration(settings, [], [])
            configurations.append(match)
        (match.runs if ok else match.failed).append(run)

    chosen = _apply_selection(selection, groups) if selection else {}
    methods = []
    for (task, name), configurations in sorted(groups.items()):
        metric = (metrics or {}).get(task, "loss")
        if (task, name) in chosen:
            methods.append(chosen[(task, name)])
        elif len(configurations) == 1:
            methods.append(_single(task, name, configurations[0], keys))
        else:
            methods.append(_best(task, name, configurations, metric, split, last_k))
    return methods


def _single(task: str, name: str, configuration: _Configuration, keys: Sequence[str]) -> Method:
    runs = configuration.runs or configuration.failed
    status = DEFAULT if runs and is_default(runs[0], keys) else FIXED
    rule = ("the package defaults (conf/optimizer)" if status == DEFAULT
            else "the only configuration (set by hand or tuned elsewhere)")
    return Method(task, name, configuration.runs, {}, 1, status, rule, _failure_notes(configuration))


def _best(task: str, name: str, configurations: list[_Configuration], metric: str, split: str,
          last_k: int) -> Method:
    setting_of = _settings_that_vary(configurations)
    eligible = [c for c in configurations if c.runs and not c.failed]
    shared = set.intersection(*(c.seeds for c in eligible)) if eligible else set()

    def score(configuration: _Configuration) -> float:
        values = [run_final(r, metric, split, last_k) for r in configuration.runs if not shared or r.seed in shared]
        return float(np.mean(values)) if values else math.nan

    scored = [(score(c), i, c) for i, c in enumerate(eligible)]
    unscored = sum(math.isnan(item[0]) for item in scored)
    scored = [item for item in scored if not math.isnan(item[0])]
    seeds = f"seed{'s' if len(shared) != 1 else ''} {', '.join(map(str, sorted(shared)))}" if shared else \
        "each configuration's own seeds (no seed is shared by all)"
    rule = f"best final {describe_metric(metric, split)} of {len(configurations)} configurations, mean over {seeds}"
    notes = []
    excluded = len(configurations) - len(eligible)
    if excluded:
        notes.append(f"{excluded} configuration(s) with failed or unfinished runs not eligible")
    if unscored and scored:
        notes.append(f"{unscored} configuration(s) without a final {metric} on {split} not eligible")
    if not scored:
        if eligible:
            raise ReportError(f"cannot select a configuration of {name} on {task}: no run logged {metric!r} on the "
                              f"{split!r} split (choose another with --select-split)")
        return Method(task, name, [], {}, len(configurations), TUNED, rule, notes + ["no configuration eligible"])
    sign = -1.0 if higher_is_better(metric) else 1.0
    _, _, best = min(scored, key=lambda item: (sign * item[0], item[1]))
    reused = sorted(shared & best.seeds)
    if reused:
        notes.append(f"selected on compared seeds ({', '.join(map(str, reused))}): selection bias not removed")
    return Method(task, name, best.runs, setting_of(best), len(configurations), TUNED, rule, notes)


def _failure_notes(configuration: _Configuration) -> list[str]:
    if not configuration.failed:
        return []
    total = len(configuration.runs) + len(configuration.failed)
    return [f"{len(configuration.failed)} of {total} runs failed, diverged or did not finish"]


def _settings_that_vary(configurations: list[_Configuration]):
    keys = {k for c in configurations for k in c.settings}
    varying = sorted(k for k in keys if len({repr(c.settings.get(k)) for c in configurations}) > 1)
    return lambda configuration: {k: configuration.settings.get(k) for k in varying}


# ------------------------------------------------------------------------------------------ defaults
def package_defaults(name: str) -> tuple[dict[str, Any], set[str]] | None:
    """``conf/optimizer/<name>.yaml`` flattened (``optimizer.lr`` ...): (its plain values, all its keys)."""
    path = OPTIMIZER_CONFIGS / f"{name}.yaml"
    if not path.is_file():
        return None
    node = yaml.safe_load(path.read_text()) or {}
    node.pop("defaults", None)
    flat = flatten({"optimizer": node})
    plain = {k: v for k, v in flat.items() if not (isinstance(v, str) and "${" in v)}
    return plain, set(flat)


def is_default(run: Run, keys: Sequence[str] = DEFAULT_METHOD_KEYS) -> bool:
    """Whether the run's optimizer node is its config file's, apart from the method keys."""
    defaults = package_defaults(run.optimizer)
    if defaults is None:
        return False
    plain, every_key = defaults
    mine = {k: v for k, v in run.settings.items() if k.startswith("optimizer.") and k not in keys}
    return set(mine) <= every_key and all(_same_value(mine.get(k), v) for k, v in plain.items() if k not in keys)


# -------------------------------------------------------------------------------------- selection file
def read_selection(path: str | Path) -> Selection:
    """Read and check a selection file. The format (JSON)::

        {"rule": "how the configurations were chosen, in words",
         "selected": [{"task": "mlp/digits", "optimizer": "adamw",
                       "config": {"optimizer.lr": 0.003, "optimizer.weight_decay": 0.1},
                       "seeds": [10, 11, 12, 13, 14],     # optional: compare on these seeds only
                       "trials": 16,                      # optional: configurations tried (default: those found)
                       "notes": ["lr on the upper edge of its search space"]}]}   # optional

    ``config`` holds dotted config keys (as ``config.yaml`` nests them) with the selected values; it must match
    exactly one configuration of that optimizer on that task (add keys until it does).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ReportError(f"selection file {path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("rule"), str) or not isinstance(
            data.get("selected"), list):
        raise ReportError(f"selection file {path}: expected {{\"rule\": str, \"selected\": [...]}}")
    for i, entry in enumerate(data["selected"]):
        problem = _entry_problem(entry)
        if problem:
            raise ReportError(f"selection file {path}, selected[{i}]: {problem}")
    return Selection(path, data["rule"], data["selected"])


def _entry_problem(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return "expected an object"
    unknown = set(entry) - _ENTRY_KEYS
    if unknown:
        return f"unknown keys {sorted(unknown)} (known: {sorted(_ENTRY_KEYS)})"
    if not isinstance(entry.get("task"), str) or not isinstance(entry.get("optimizer"), str):
        return "needs \"task\" and \"optimizer\" (strings)"
    if not isinstance(entry.get("config"), dict):
        return "needs \"config\": {dotted key: value}"
    seeds = entry.get("seeds")
    if seeds is not None and not (isinstance(seeds, list) and seeds and all(type(s) is int for s in seeds)):
        return "\"seeds\" must be a non-empty list of integers"
    trials = entry.get("trials")
    if trials is not None and not (type(trials) is int and trials >= 1):
        return "\"trials\" must be a positive integer"
    notes = entry.get("notes", [])
    if not (isinstance(notes, list) and all(isinstance(n, str) for n in notes)):
        return "\"notes\" must be a list of strings"
    return None


def _apply_selection(selection: Selection,
                     groups: dict[tuple[str, str], list[_Configuration]]) -> dict[tuple[str, str], Method]:
    chosen: dict[tuple[str, str], Method] = {}
    for entry in selection.entries:
        task, optimizer, config = entry["task"], entry["optimizer"], entry["config"]
        where = f"selection file {selection.path}: {optimizer} on {task} ({describe(config)})"
        matches = [(key, c) for key, configurations in groups.items() for c in configurations
                   if key[0] == task and _optimizer_of(c) == optimizer
                   and all(k in c.settings and _same_value(c.settings[k], v) for k, v in config.items())]
        if not matches:
            known = {k for configurations in groups.values() for c in configurations for k in c.settings}
            unknown = sorted(set(config) - known)
            hint = f"; no run has the keys {unknown}" if unknown else ""
            raise ReportError(f"{where} matches no run in this source{hint}")
        if len(matches) > 1:
            found = "; ".join(f"{key[1]}: {describe(c.settings)}"[:200] for key, c in matches[:3])
            raise ReportError(f"{where} matches {len(matches)} configurations ({found}); add the config keys "
                              "that tell them apart")
        (key, configuration), = matches
        if key in chosen:
            raise ReportError(f"{where}: a second entry for {key[1]} on {task}")
        configurations = groups[key]
        seeds = entry.get("seeds")
        runs = [r for r in configuration.runs if seeds is None or r.seed in seeds]
        notes = list(entry.get("notes", []))
        missing = sorted(set(seeds or []) - {r.seed for r in runs})
        if missing:
            notes.append(f"selected seeds {missing} have no completed run")
        setting = {k: configuration.settings.get(k) for k in config}
        chosen[key] = Method(task, key[1], runs, setting, entry.get("trials", len(configurations)), TUNED,
                             f"{selection.rule} ({selection.path.name})", notes)
    return chosen


def _optimizer_of(configuration: _Configuration) -> str:
    return str(configuration.settings.get("optimizer.name"))


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)


def _same_value(a: Any, b: Any) -> bool:
    """Equal, numbers up to a relative 1e-9 (a YAML ``3e-3`` and a JSON ``0.003`` are one lr)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9)
    return a == b
