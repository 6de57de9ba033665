"""Methods and their configurations: grouping by optimizer, the selection rule, the selection file, the baseline,
and when wall-clock times may be compared."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from research_optim.report import ReportError
from research_optim.report.analysis import final_loss_table
from research_optim.report.methods import (OPTIMIZER_CONFIGS, choose_methods, is_default, read_selection,
                                           resolve_baseline)
from research_optim.report.wallclock import comparable
from tests.report.runs_in_memory import make_run

STEPS = [10, 20, 30]


def lr_run(optimizer: str, lr: float, seed: int, train: float, val: float, task: str = "mlp/digits", **kw):
    """A run whose final training loss is ``train`` and final validation loss ``val``."""
    return make_run(optimizer, seed, STEPS, [3.0, 2.0, train], task=task, hparams={"lr": lr},
                    varying={"lr": lr}, val={"step": [30], "loss": [val]}, **kw)


def by_key(methods):
    return {(m.task, m.name): m for m in methods}


# ------------------------------------------------------------------------------------------------ grouping
def test_one_column_per_optimizer_represented_by_its_best_lr_on_validation():
    # The best lr differs by task (3e-3 on digits, 1e-2 on the LM), and training loss ranks the lrs the other
    # way round: columns must still be "adamw" on both tasks, chosen on validation.
    runs = []
    for seed in (0, 1):
        runs += [lr_run("adamw", 3e-3, seed, train=0.9, val=0.20 + 0.01 * seed),
                 lr_run("adamw", 1e-2, seed, train=0.1, val=0.30 + 0.01 * seed),
                 lr_run("adamw", 3e-3, seed, train=0.1, val=0.50, task="lm"),
                 lr_run("adamw", 1e-2, seed, train=0.9, val=0.40, task="lm"),
                 lr_run("lion", 1e-4, seed, train=0.5, val=0.6), lr_run("lion", 1e-4, seed, 0.5, 0.6, task="lm")]
    methods = by_key(choose_methods(runs))
    assert sorted(methods) == [("lm", "adamw"), ("lm", "lion"), ("mlp/digits", "adamw"), ("mlp/digits", "lion")]
    digits, lm = methods[("mlp/digits", "adamw")], methods[("lm", "adamw")]
    assert digits.setting == {"optimizer.lr": 3e-3} and lm.setting == {"optimizer.lr": 1e-2}
    assert (digits.configurations, digits.status, digits.seeds) == (2, "tuned", [0, 1])
    assert "validation loss" in digits.rule and "seeds 0, 1" in digits.rule
    assert "selection bias" in digits.notes[0]
    label = {id(r): m.name for m in methods.values() for r in m.runs}
    table = final_loss_table([r for m in methods.values() for r in m.runs], label=lambda r: label[id(r)])
    assert not table.isna().any().any()  # no "–" where data exist
    assert table.loc["mlp/digits", "adamw"] == pytest.approx(0.9) and table.loc["lm", "adamw"] == pytest.approx(0.9)


def test_selection_uses_the_seeds_every_configuration_has():
    runs = [lr_run("adamw", 1e-3, 0, 1.0, val=0.5), lr_run("adamw", 1e-3, 1, 1.0, val=0.1),
            lr_run("adamw", 1e-2, 0, 1.0, val=0.4)]  # only seed 0: lr 1e-2 is better there (0.4 < 0.5)
    (method,) = choose_methods(runs)
    assert method.setting == {"optimizer.lr": 1e-2} and "seed 0," in method.rule + ","


def test_a_configuration_with_a_failed_run_cannot_be_selected():
    best = lr_run("adamw", 1e-2, 0, 1.0, val=0.1)
    diverged = lr_run("adamw", 1e-2, 1, 1.0, val=0.1)
    runs = [best, lr_run("adamw", 1e-3, 0, 1.0, val=0.5), lr_run("adamw", 1e-3, 1, 1.0, val=0.5)]
    (method,) = choose_methods(runs, failed=[diverged])
    assert method.setting == {"optimizer.lr": 1e-3} and method.configurations == 2
    assert "1 configuration(s) with failed or unfinished runs not eligible" in method.notes


def test_a_configuration_without_the_metric_is_noted_not_selected():
    runs = [lr_run("adamw", 1e-3, 0, 1.0, val=0.5), make_run("adamw", 0, STEPS, [3.0, 2.0, 0.1], hparams={"lr": 1e-2})]
    (method,) = choose_methods(runs)
    assert method.setting == {"optimizer.lr": 1e-3}
    assert "1 configuration(s) without a final loss on val not eligible" in method.notes


def test_higher_is_better_metrics_select_the_maximum():
    runs = [make_run("adamw", 0, STEPS, [1, 1, 1], hparams={"lr": lr}, val={"step": [30], "accuracy": [acc]})
            for lr, acc in [(1e-3, 0.9), (1e-2, 0.8)]]
    (method,) = choose_methods(runs, metrics={"mlp/digits": "accuracy"})
    assert method.setting == {"optimizer.lr": 1e-3}
    with pytest.raises(ReportError, match="no run logged 'accuracy' on the 'train' split"):
        choose_methods(runs, metrics={"mlp/digits": "accuracy"}, split="train")


def test_one_configuration_is_default_or_fixed():
    defaults = yaml.safe_load((OPTIMIZER_CONFIGS / "adamw.yaml").read_text())
    at_defaults = make_run("adamw", 0, STEPS, [3, 2, 1], hparams={k: v for k, v in defaults.items() if k != "name"})
    (method,) = choose_methods([at_defaults])
    assert (method.status, method.configurations, method.setting) == ("default", 1, {})
    hparams = {k: v for k, v in defaults.items() if k != "name"} | {"lr": 3e-3}
    (method,) = choose_methods([make_run("adamw", 0, STEPS, [3, 2, 1], hparams=hparams)])
    assert method.status == "fixed" and "set by hand" in method.rule
    # cautious over lion at its file's values is the default (base is a method key, not a hyperparameter).
    cautious = {k: v for k, v in yaml.safe_load((OPTIMIZER_CONFIGS / "cautious.yaml").read_text()).items()
                if k != "name"} | {"base": "lion"}
    run = make_run("cautious", 0, STEPS, [3, 2, 1], hparams=cautious)
    assert is_default(run)
    assert [(m.name, m.status) for m in choose_methods([run])] == [("cautious base=lion", "default")]


def test_method_keys_make_each_value_a_method():
    runs = [make_run("cautious", seed, STEPS, [3, 2, 1], hparams={"base": "adamw", "phi": phi, "lr": lr},
                     val={"step": [30], "loss": [val]})
            for seed in (0, 1) for phi, lr, val in [("soft", 1e-3, 0.5), ("soft", 1e-2, 0.4), ("indicator", 1e-3, 0.3)]]
    assert [m.name for m in choose_methods(runs)] == ["cautious base=adamw"]  # φ and lr tuned together
    methods = by_key(choose_methods(runs, keys=("optimizer.base", "optimizer.phi")))
    assert sorted(name for _, name in methods) == ["cautious base=adamw phi=indicator", "cautious base=adamw phi=soft"]
    soft = methods[("mlp/digits", "cautious base=adamw phi=soft")]
    assert soft.setting == {"optimizer.lr": 1e-2} and soft.configurations == 2


# ------------------------------------------------------------------------------------------ selection file
def write_selection(tmp_path: Path, selected: list[dict], rule: str = "QMC search, 8 trials") -> Path:
    path = tmp_path / "selection.json"
    path.write_text(json.dumps({"rule": rule, "selected": selected}))
    return path


def grid():
    return [lr_run("adamw", lr, seed, train=1.0, val=val) for seed in (0, 1, 2)
            for lr, val in [(1e-3, 0.5), (1e-2, 0.4)]]


def test_a_selection_file_names_the_configuration_and_the_seeds(tmp_path):
    path = write_selection(tmp_path, [{"task": "mlp/digits", "optimizer": "adamw", "config": {"optimizer.lr": 0.001},
                                       "seeds": [1, 2, 7], "trials": 8, "notes": ["lr on the lower edge"]}])
    (method,) = choose_methods(grid(), selection=read_selection(path))
    # The file wins over the validation rule (which would pick 1e-2), on the seeds it names.
    assert method.setting == {"optimizer.lr": 1e-3} and method.seeds == [1, 2]
    assert (method.status, method.configurations) == ("tuned", 8)
    assert method.rule == "QMC search, 8 trials (selection.json)"
    assert method.notes == ["lr on the lower edge", "selected seeds [7] have no completed run"]


def test_a_selection_file_that_does_not_match_is_an_error(tmp_path):
    entry = {"task": "mlp/digits", "optimizer": "adamw"}
    cases = [({**entry, "config": {"optimizer.lr": 0.1}}, "matches no run in this source"),
             ({**entry, "config": {"optimizer.momentum": 0.9}}, "no run has the keys \\['optimizer.momentum'\\]"),
             ({**entry, "config": {}}, "matches 2 configurations"),
             ({**entry, "task": "lm", "config": {"optimizer.lr": 0.001}}, "matches no run")]
    for selected, message in cases:
        with pytest.raises(ReportError, match=message):
            choose_methods(grid(), selection=read_selection(write_selection(tmp_path, [selected])))
    twice = [{**entry, "config": {"optimizer.lr": 0.001}}, {**entry, "config": {"optimizer.lr": 0.01}}]
    with pytest.raises(ReportError, match="a second entry for adamw"):
        choose_methods(grid(), selection=read_selection(write_selection(tmp_path, twice)))


@pytest.mark.parametrize("content, message", [
    ("[1, 2]", "expected"),
    ('{"rule": "r", "selected": [{"task": "t", "optimizer": "o", "config": {}, "seed": [1]}]}', "unknown keys"),
    ('{"rule": "r", "selected": [{"task": "t", "optimizer": "o", "config": {}, "trials": 0}]}', "trials"),
    ('{"rule": "r", "selected": [{"task": "t", "optimizer": "o"}]}', "config"),
    ("{not json", "selection file"),
])
def test_a_malformed_selection_file_names_the_file_and_the_problem(tmp_path, content, message):
    path = tmp_path / "selection.json"
    path.write_text(content)
    with pytest.raises(ReportError, match=message) as error:
        read_selection(path)
    assert str(path) in str(error.value)


# ------------------------------------------------------------------------------------------------- baseline
def test_baseline_is_explicit_when_ambiguous():
    assert resolve_baseline(["lion", "adamw", "salsa"], None) == "adamw"
    assert resolve_baseline(["lion", "adamw"], "lion") == "lion"
    assert resolve_baseline(["lion"], None) is None  # nothing to compare
    with pytest.raises(ReportError, match="choose the baseline with --baseline, one of: lion, salsa"):
        resolve_baseline(["salsa", "lion"], None)
    with pytest.raises(ReportError, match="'adamw lr=0.001' is not a method of this report; methods: adamw, lion"):
        resolve_baseline(["adamw", "lion"], "adamw lr=0.001")


# ---------------------------------------------------------------------------------------------- wall-clock
def timed(load, threads=1, host="vm", device="cpu"):
    environment = {"host": host, "device": device, "threads": threads, "load_average": load}
    return make_run("adamw", 0, STEPS, [3, 2, 1], environment={k: v for k, v in environment.items() if v is not None})


def test_wall_clock_is_comparable_only_when_measured_alike():
    assert comparable([timed(0.2), timed([0.5, 1.0, 1.0])]) == (
        True, "comparable: one host, device and thread count, load average 0.20–0.50")
    assert comparable([timed(0.1), timed(2.9)]) == (
        False, "not comparable: measured at different loads (load average 0.10–2.90)")
    assert comparable([timed(0.1), timed(None)]) == (
        False, "not comparable: machine load not recorded (1 of 2 runs)")
    assert comparable([timed(0.1, threads=1), timed(0.1, threads=2)]) == (
        False, "not comparable: measured with different threads (1, 2)")
    assert comparable([timed(0.1, host="n1"), timed(0.1, host="n2")])[1].endswith("different host (n1, n2)")
