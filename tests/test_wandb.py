"""W&B in offline mode writes a real run (no server needed); W&B failures never stop a run."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import read_metrics


def test_wandb_offline_writes_a_run(tiny_run, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    summary = tiny_run("logger=wandb", "run.tags=[unit]")
    assert summary["status"] == "completed"
    run_dir = Path(summary["run_dir"])
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1, list((run_dir / "wandb").iterdir())
    files = list(offline[0].glob("run-*.wandb"))
    assert files and files[0].stat().st_size > 0
    run_id = run_dir.name.rsplit("-", 1)[-1]
    assert files[0].name == f"run-{run_id}.wandb"  # the W&B run id is the run identity
    assert read_metrics(run_dir)  # local metrics are written regardless


def test_wandb_failure_does_not_stop_the_run(tiny_run, monkeypatch):
    import wandb

    def broken_init(*args, **kwargs):
        raise RuntimeError("W&B is down")

    monkeypatch.setattr(wandb, "init", broken_init)
    summary = tiny_run("logger=wandb")
    assert summary["status"] == "completed"
    assert read_metrics(summary["run_dir"])


def test_wandb_log_failure_mid_run_disables_it(tiny_run, monkeypatch):
    from research_optim import tracking

    def broken_log(self, record):
        raise ConnectionError("lost the server")

    monkeypatch.setattr(tracking.WandbRun, "log", broken_log)
    summary = tiny_run("logger=wandb")
    assert summary["status"] == "completed"
    assert len([r for r in read_metrics(summary["run_dir"]) if r["split"] == "train"]) == 4
