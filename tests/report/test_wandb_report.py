"""The W&B side of reports, offline: the Report builder (a pure function) and reading runs back from the API.

wandb-workspaces looks up the project's internal id through the W&B API when a ``Runset`` is serialised
(``Runset._to_model`` → ``execute_graphql(_get_api(), ...)``); that single call is stubbed here. Saving the
Report is the only online step and is not exercised.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from research_optim.report.document import Document, Figure, Section, Table, Text
from research_optim.report.runs import load_runs
from research_optim.report.wandb_source import download_runs, history_to_records
from research_optim.report.runs import Run


def make_runs(metrics_columns: list[str] = ()) -> list[Run]:
    """Two completed in-memory runs (adamw, lion) of group phi_ablation with the given extra metric columns."""
    runs = []
    for name in ("adamw", "lion"):
        metrics = pd.DataFrame({"step": [10, 20], "split": "train", "loss": [1.0, 0.5],
                                **{c: [0.1, 0.2] for c in metrics_columns}})
        runs.append(Run(path=Path(f"/runs/{name}"), config={"optimizer": {"name": name}}, metrics=metrics,
                        status="completed", error=None, summary={}, optimizer=name, task="mlp/digits", seed=0,
                        run_id=name, sweep=None, group="phi_ablation", hparams={}))
    return runs


@pytest.fixture
def document() -> Document:
    table = Table(pd.DataFrame({"adamw": [0.5], "lion": [0.25]}, index=pd.Index(["mlp/digits"], name="task")),
                  "final loss", best="min")
    return Document("Sweep report", [Section("Final training loss", [Text("bold: **best**"), table]),
                                     Section("Profiles", [Figure("profiles", b"png", "performance profiles")])])


def test_builder_makes_panels_tables_and_runset_offline(document, monkeypatch):
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces.reports.v2 import interface

    from research_optim.report.wandb_report import build_wandb_report

    runs = make_runs(metrics_columns=["opt/masked_fraction"])
    report = build_wandb_report(document, runs, entity="lab", project="optim", groups=["phi_ablation"])
    assert (report.entity, report.project, report.title) == ("lab", "optim", "Sweep report")
    grid = next(b for b in report.blocks if isinstance(b, wr.PanelGrid))
    (runset,) = grid.runsets
    assert (runset.entity, runset.project) == ("lab", "optim") and "phi_ablation" in str(runset.filters)
    plots = {(p.x, tuple(p.y)) for p in grid.panels}
    for x in ("step", "examples", "train_time"):
        assert (x, ("train/loss",)) in plots
    assert ("step", ("train/opt/masked_fraction",)) in plots
    assert all(p.groupby_rangefunc == "minmax" and p.groupby_aggfunc == "mean" for p in grid.panels)
    markdown = [b.text for b in report.blocks if isinstance(b, wr.MarkdownBlock)]
    assert any("| mlp/digits | 0.5 | **0.25** |" in text for text in markdown)  # the table, best in bold
    assert any("performance profiles" in text for text in markdown)

    # Serialising the Runset asks the W&B API for the project's id: stub that one call.
    calls = []
    monkeypatch.setattr(interface, "_get_api", lambda: object())
    monkeypatch.setattr(interface, "execute_graphql",
                        lambda api, query, variables: calls.append(variables) or {"project": {"internalId": "p1"}})
    model = report._to_model()
    assert calls == [{"entityName": "lab", "projectName": "optim"}]
    assert "train/loss" in json.dumps(model.model_dump(by_alias=True), default=str)


def test_publish_does_not_save_offline(document, monkeypatch):
    from research_optim.report.runs import RunSet
    from research_optim.report.wandb_report import publish

    monkeypatch.setenv("WANDB_MODE", "offline")
    assert publish(document, RunSet(make_runs(), []), entity="lab").startswith("W&B Report not saved: offline")


class _FakeRun:
    def __init__(self, name, state, rows, group="bench"):
        self.id, self.name, self.state, self.group = name[-4:], name, state, group
        self.config = {"seed": 0, "optimizer": {"name": name.split("-")[0], "lr": 0.001}, "run": {"group": group}}
        self.summary = {"train_loss": rows[-1].get("train/loss"), "_runtime": 3}
        self._rows = rows

    def scan_history(self):
        return iter(self._rows)


class _FakeApi:
    def __init__(self, runs):
        self._runs, self.asked = runs, []

    def runs(self, path, filters=None):
        self.asked.append((path, filters))
        return self._runs


def test_wandb_source_mirrors_runs_into_the_local_layout(tmp_path):
    rows = [{"step": 10, "examples": 160, "train_time": 0.1, "train/loss": 2.0, "train/lr": 1e-3, "_step": 0},
            {"step": 20, "examples": 320, "train_time": 0.2, "train/loss": 1.0, "val/loss": 1.5, "val/accuracy": 0.5}]
    api = _FakeApi([_FakeRun("adamw-mlp-digits-s0-abcd", "finished", rows),
                    _FakeRun("lion-mlp-digits-s0-efgh", "crashed", rows[:1])])
    directory = download_runs("lab/optim/bench", tmp_path, api=api, progress=False)
    assert api.asked == [("lab/optim", {"group": "bench"})]
    runset = load_runs(directory, progress=False)
    (run,) = runset.runs
    assert run.optimizer == "adamw" and run.run_id == "abcd" and run.group == "bench"
    assert run.curve("loss").to_dict() == {10: 2.0, 20: 1.0}
    assert run.curve("loss", "val").to_dict() == {20: 1.5}
    assert run.curve("loss", x="train_time").to_dict() == {0.1: 2.0, 0.2: 1.0}
    ((problem),) = runset.problems
    assert problem.status == "failed" and "crashed" in problem.error


def test_history_rows_split_back_into_train_and_val_lines():
    records = history_to_records([{"step": 5, "examples": 80, "train_time": 0.5, "train/loss": 1.0,
                                   "train/opt/masked_fraction": 0.4, "val/loss": 2.0}, {"_runtime": 1.0}])
    assert records == [
        {"step": 5, "examples": 80, "train_time": 0.5, "split": "train", "loss": 1.0, "opt/masked_fraction": 0.4},
        {"step": 5, "examples": 80, "train_time": 0.5, "split": "val", "loss": 2.0},
    ]
