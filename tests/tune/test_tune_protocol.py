"""The tuning protocol end to end with real Optuna journal storage: workers sharing one study, a worker killed
mid-trial, an edge optimum and the widened study, selection on validation only, diverged trials."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState

from research_optim.report.__main__ import main as report_main
from research_optim.tune.app import tune
from research_optim.tracking import MetricsFile
from tests.tune.tuning import run_tune, selection, study, summary, tune_command, tune_config

pytestmark = pytest.mark.slow


def _completed_once(run_dir: str) -> dict:
    """The run's summary, after checking it completed and was trained in one segment (never run twice)."""
    done = summary(run_dir)
    assert done["status"] == "completed" and len(done["segments"]) == 1, (run_dir, done["segments"])
    return done


def test_two_local_workers_share_one_study_without_losing_or_repeating_a_trial(tmp_path):
    args = ["train.steps=150", "tune.budget=6"]
    workers = [subprocess.Popen(tune_command(tmp_path, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(2)]
    outputs = [worker.communicate(timeout=400) for worker in workers]
    assert [w.returncode for w in workers] == [0, 0], [err[-2000:] for _, err in outputs]
    trials = study(tmp_path / "tune").trials
    assert [t.number for t in trials] == list(range(6)) and all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.user_attrs["owner"] for t in trials}) == 2, "both workers ran trials"
    runs = [t.user_attrs["runs"][0] for t in trials]
    assert len(set(runs)) == 6
    for trial, run in zip(trials, runs):
        assert trial.value == _completed_once(run)["final"]["val_loss"]
    # every trial reported by exactly one worker; the last one selected and confirmed, each seed once
    reported = [line.split()[1] for out, _ in outputs for line in out.splitlines() if line.startswith("trial ")]
    assert sorted(reported, key=int) == [str(n) for n in range(6)]
    entry, = selection(tmp_path / "tune")["selected"]
    assert entry["trials"] == 6 and entry["seeds"] == [100, 101]
    confirmations = [d for d in (tmp_path / "tune").iterdir() if "-s10" in d.name]
    assert len(confirmations) == 2 and all(_completed_once(d) for d in confirmations)


def test_a_worker_killed_mid_trial_is_taken_over_and_its_run_resumed(tmp_path):
    args = ["train.steps=1500", "train.checkpoint_every=20", "tune.budget=2", "tune.confirm_seeds=[100]"]
    worker = subprocess.Popen(tune_command(tmp_path, *args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not list((tmp_path / "tune").glob("*/checkpoints/last.pt")):
        assert worker.poll() is None and time.time() < deadline, "the first trial never checkpointed"
        time.sleep(0.5)
    os.kill(worker.pid, signal.SIGKILL)  # mid-trial: no handler runs, the journal says RUNNING
    worker.wait()
    (orphan,) = study(tmp_path / "tune").trials
    assert orphan.state == TrialState.RUNNING and orphan.user_attrs["owner"].split()[1] == str(worker.pid)

    out = run_tune(tmp_path, *args, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"trial 0: taken over from {orphan.user_attrs['owner']} (gone)" in out.stdout
    trials = study(tmp_path / "tune").trials
    assert [(t.number, t.state) for t in trials] == [(0, TrialState.COMPLETE), (1, TrialState.COMPLETE)]
    assert trials[0].params == orphan.params
    resumed = summary(trials[0].user_attrs["runs"][0])
    assert resumed["status"] == "completed" and len(resumed["segments"]) == 2
    assert resumed["segments"][1]["step"] >= 20, "resumed from its checkpoint, not started over"
    run_dirs = [d for d in (tmp_path / "tune").iterdir() if (d / "config.yaml").exists()]
    assert len(run_dirs) == 3  # two trials and one confirmation run: nothing ran twice


def test_an_edge_optimum_is_flagged_and_the_widened_study_continues(tmp_path, capsys):
    """lr in [1e-5, 1e-4] for 30 steps: the larger the better, so the best of the Sobol points (one per quarter of
    the log range) is in the upper 30% — flagged with tune.edge=0.3. Widening continues the same study."""
    narrow = ["search_space.lr.low=1e-5", "search_space.lr.high=1e-4", "~search_space.one_minus_beta1",
              "~search_space.weight_decay", "tune.edge=0.3", "tune.budget=4"]
    assert tune(tune_config(tmp_path, *narrow)) == 0
    out = capsys.readouterr().out
    assert "EDGE     lr=" in out and "on the upper edge of its search space [1e-05, 0.0001] log: widen it " \
                                    "(search_space.lr.high=0.001)" in out
    entry, = selection(tmp_path / "tune")["selected"]
    assert any("on the upper edge" in note for note in entry["notes"])
    before = study(tmp_path / "tune").trials

    assert tune(tune_config(tmp_path, *narrow[:-1], "search_space.lr.high=1e-2", "tune.budget=6")) == 0
    out = capsys.readouterr().out
    after = study(tmp_path / "tune").trials
    assert len(list((tmp_path / "tune" / "studies").glob("*.journal"))) == 1, "the same study"
    assert [(t.number, t.params, t.value) for t in after[:4]] == [(t.number, t.params, t.value) for t in before]
    assert len(after) == 6 and all(1e-5 <= t.params["lr"] <= 1e-2 for t in after[4:])
    assert "study    " in out and "6 of 6 trials" in out
    assert selection(tmp_path / "tune")["selected"][0]["trials"] == 6


def test_selection_reads_validation_only_never_the_test_split(tmp_path, capsys):
    """Each trial's value is its run's final validation loss; making another trial best on the test split changes
    nothing: the selection is re-made from the study and the validation split alone."""
    args = ["tune.budget=3"]
    assert tune(tune_config(tmp_path, *args)) == 0
    trials = study(tmp_path / "tune").trials
    for trial in trials:
        records = MetricsFile(Path(trial.user_attrs["runs"][0]) / "metrics.jsonl").records()
        val = [r["loss"] for r in records if r["split"] == "val"]
        test = [r["loss"] for r in records if r["split"] == "test"]
        assert trial.value == val[-1] and len(test) == 1 and test[0] != val[-1]
    best = min(trials, key=lambda t: t.value)
    chosen = selection(tmp_path / "tune")["selected"][0]["config"]["optimizer.lr"]
    assert chosen == best.params["lr"]
    # make the worst trial by far the best on test, in its metrics and its summary
    worst = max(trials, key=lambda t: t.value)
    run = Path(worst.user_attrs["runs"][0])
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    (run / "metrics.jsonl").write_text("".join(json.dumps({**r, "loss": 0.0} if r["split"] == "test" else r) + "\n"
                                               for r in lines))
    done = summary(run)
    done["final"]["test_loss"] = 0.0
    (run / "summary.json").write_text(json.dumps(done))
    capsys.readouterr()
    assert tune(tune_config(tmp_path, *args)) == 0
    assert selection(tmp_path / "tune")["selected"][0]["config"]["optimizer.lr"] == best.params["lr"]
    assert f"best     trial {best.number}:" in capsys.readouterr().out


def test_a_diverged_trial_counts_as_tried_with_the_worst_value(tmp_path, capsys):
    args = ["optimizer=sgd", "train.grad_clip=null", "search_space.lr.low=1e-2", "search_space.lr.high=1e8",
            "~search_space.one_minus_momentum", "~search_space.weight_decay", "tune.budget=4"]
    assert tune(tune_config(tmp_path, *args)) == 0
    trials = study(tmp_path / "tune").trials
    diverged = [t for t in trials if t.user_attrs["status"] == "diverged"]
    assert len(trials) == 4 and diverged and all(t.value == float("inf") for t in diverged)
    assert all(summary(t.user_attrs["runs"][0])["status"] == "diverged" for t in diverged)
    best = min(trials, key=lambda t: t.value)
    assert best not in diverged and f"best     trial {best.number}:" in capsys.readouterr().out
    assert f"({len(trials) - len(diverged)} completed, {len(diverged)} diverged, 0 failed)" in \
        selection(tmp_path / "tune")["selected"][0]["notes"][0]


def test_tpe_samples_the_same_space_and_is_recorded(tmp_path):
    """TPE (random for the first half of the budget, then model-based), seeded per trial."""
    assert tune(tune_config(tmp_path, "tune.sampler=tpe", "tune.budget=3", "tune.confirm_seeds=[100]")) == 0
    trials = study(tmp_path / "tune").trials
    assert [t.user_attrs["sampler"] for t in trials] == ["tpe"] * 3
    assert len({t.params["lr"] for t in trials}) == 3 and all(1e-4 <= t.params["lr"] <= 1e-2 for t in trials)


def test_the_report_compares_the_confirmed_configurations_named_in_selection_json(tmp_path):
    """`tune -m optimizer=adamw,lion` writes one selection.json entry per study; the report represents each optimizer
    by the selected configuration on its confirmation seeds alone (the tuning seed's run of the same configuration
    is left out), on validation and on the held-out test split."""
    out = subprocess.run(tune_command(tmp_path, "tune.budget=2", "optimizer=adamw,lion", multirun=True),
                         capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    sweep = tmp_path / "tune"
    entries = {entry["optimizer"]: entry for entry in selection(sweep)["selected"]}
    assert sorted(entries) == ["adamw", "lion"] and all(e["seeds"] == [100, 101] for e in entries.values())
    for split in ("val", "test"):
        assert report_main([str(sweep), "--split", split, "--out", str(sweep / split), "--quiet"]) == 0
        text = (sweep / split / "report.md").read_text()
        methods = _rows(text, "## Methods and configurations")
        finals = _rows(text, "## Final ")["mlp/teacher_student (excess)"]
        for name, entry in entries.items():
            assert (methods[name]["status"], methods[name]["seeds"]) == ("tuned", "100, 101")
            assert f"lr={entry['config']['optimizer.lr']:g}" in methods[name]["configuration"]
            assert entry["notes"][0] in methods[name]["notes"]
            confirmed = [summary(run)["final"] for run in sweep.iterdir() if (run / "summary.json").exists()
                         and _config(run)["seed"] in (100, 101) and _config(run)["optimizer"]["name"] == name]
            gaps = [final[f"{split}_gap_to_optimum"] for final in confirmed]
            assert len(gaps) == 2
            assert float(finals[f"{name} (tuned)"].strip("*")) == pytest.approx(sum(gaps) / 2, rel=1e-3)


def _config(run_dir: Path) -> dict:
    return yaml.safe_load((run_dir / "config.yaml").read_text())


def _rows(markdown: str, heading: str) -> dict[str, dict[str, str]]:
    """The first Markdown table after ``heading``: its rows by first cell, each a dict by column header."""
    lines = markdown.split(heading, 1)[1].splitlines()
    table = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines
             if line.startswith("|") and not set(line) <= set("|-")]
    header, *rows = table[:next((i for i in range(1, len(table)) if len(table[i]) != len(table[0])), len(table))]
    return {row[0]: dict(zip(header[1:], row[1:])) for row in rows}
