"""The W&B side of reports, offline: the Report builder (a pure function) and reading runs back from the API.

wandb-workspaces looks up the project's internal id through the W&B API when a ``Runset`` is serialised
(``Runset._to_model`` → ``execute_graphql(_get_api(), ...)``); that single network call is stubbed here (the only
mock). Saving the Report is the only online step and is not exercised.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from research_optim.report.markdown import table_markdown
from research_optim.report.runs import Run, RunSet, load_runs
from research_optim.report.sections import Options, build_document, prepare
from research_optim.report.wandb_source import download_runs, history_to_records


def make_run(name: str, lr: float, losses: list[float], metrics_columns: list[str] = ()) -> Run:
    """A completed in-memory run of group phi_ablation (run id = name) with the given extra metric columns."""
    metrics = pd.DataFrame({"step": [10, 20], "split": "train", "loss": losses,
                            **{c: [0.1, 0.2] for c in metrics_columns}})
    optimizer = name.split("-")[0]
    return Run(path=Path(f"/runs/{name}"), config={"seed": 0, "optimizer": {"name": optimizer, "lr": lr}},
               metrics=metrics, status="completed", error=None, summary={}, optimizer=optimizer,
               task="mlp/digits", seed=0, run_id=name, sweep=None, group="phi_ablation", hparams={"lr": lr})


@pytest.fixture
def study():
    runs = [make_run("adamw-a", 1e-3, [1.0, 0.5], ["opt/masked_fraction"]),
            make_run("adamw-b", 1e-2, [1.0, 0.8]),  # the worse lr: not the compared configuration
            make_run("lion-c", 1e-4, [1.0, 0.25])]
    return prepare(RunSet(runs, []), Options(title="Sweep report", select_split="train", last_k=1))


def test_builder_makes_panels_and_the_report_tables_offline(study, monkeypatch):
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces.reports.v2 import interface

    from research_optim.report.wandb_report import build_wandb_report

    document = build_document(study)
    report = build_wandb_report(document, study, entity="lab", project="optim")
    assert (report.entity, report.project, report.title) == ("lab", "optim", "Sweep report")
    (grid,) = [b for b in report.blocks if isinstance(b, wr.PanelGrid)]  # one task: one grid
    # One run set per method, holding its compared configuration only: adamw at lr 1e-3 (not 1e-2), and lion.
    assert [(r.name, r.filters) for r in grid.runsets] == [
        ("adamw · mlp/digits", "(Group = 'phi_ablation') and ID in ['adamw-a']"),
        ("lion · mlp/digits", "(Group = 'phi_ablation') and ID in ['lion-c']")]
    assert all((r.entity, r.project) == ("lab", "optim") for r in grid.runsets)
    plots = {(p.x, tuple(p.y)) for p in grid.panels}
    for x in ("step", "examples"):
        assert (x, ("train/loss",)) in plots
    assert ("train_time", ("train/loss",)) not in plots  # no load recorded: times are not comparable
    assert ("step", ("train/opt/masked_fraction",)) in plots
    assert all(p.groupby_rangefunc == "minmax" and p.groupby_aggfunc == "mean" for p in grid.panels)
    # Every table of the report is in the W&B Report, as the Markdown renderer writes it.
    markdown = [b.text for b in report.blocks if isinstance(b, wr.MarkdownBlock)]
    tables = [block for section in document.sections for block in section.blocks if hasattr(block, "frame")]
    assert len(tables) >= 3
    for table in tables:
        assert table_markdown(table) in markdown
    assert any("| mlp/digits | 0.5 | **0.25** |" in text for text in markdown)  # the final table, best in bold

    # Serialising the Runset asks the W&B API for the project's id: stub that one network call.
    calls = []
    monkeypatch.setattr(interface, "_get_api", lambda: object())
    monkeypatch.setattr(interface, "execute_graphql",
                        lambda api, query, variables: calls.append(variables) or {"project": {"internalId": "p1"}})
    model = report._to_model()
    assert calls == [{"entityName": "lab", "projectName": "optim"}] * 2  # once per run set
    assert "train/loss" in json.dumps(model.model_dump(by_alias=True), default=str)


def test_publish_does_not_save_offline(study, monkeypatch):
    from research_optim.report.wandb_report import publish

    monkeypatch.setenv("WANDB_MODE", "offline")
    assert publish(build_document(study), study, entity="lab").startswith("W&B Report not saved: offline")


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
