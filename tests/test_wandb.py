"""W&B in offline mode writes a real run (no server needed); W&B failures never stop a run."""
from __future__ import annotations

from pathlib import Path

from tests.conftest import read_metrics


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


class _RecordingRun:
    """Stands in for a wandb Run: records define_metric/log calls (the real one needs a server or a sync)."""

    def __init__(self, **init):
        self.init, self.metrics, self.logged, self.dir = init, [], [], init["dir"]
        self.summary: dict = {}

    def define_metric(self, name, **kwargs):
        self.metrics.append((name, kwargs))

    def log(self, data):
        self.logged.append(data)

    def finish(self, exit_code=0):
        self.exit_code = exit_code


def test_wandb_organisation_group_job_type_tags_axes(tiny_run, monkeypatch):
    import wandb

    runs = []
    monkeypatch.setattr(wandb, "init", lambda mode, **init: runs.append(_RecordingRun(mode=mode, **init)) or runs[-1])
    summary = tiny_run("logger=wandb", "logger.project=optim-study", "logger.entity=lab", "run.group=phi_ablation",
                       "optimizer=cautious", "optimizer.base=lion", "optimizer.phi=soft", "run.tags=[pilot]")
    assert summary["status"] == "completed"
    (run,) = runs
    init = run.init
    assert (init["project"], init["entity"], init["group"], init["job_type"]) == (
        "optim-study", "lab", "phi_ablation", "cautious")
    assert init["id"] == Path(summary["run_dir"]).name.rsplit("-", 1)[-1] and init["resume"] == "allow"
    assert init["tags"] == ["base:lion", "optimizer:cautious", "phi:soft", "pilot", "task:mlp/digits"]
    metrics = dict(run.metrics)
    assert metrics["examples"] == {"step_metric": "step"} and metrics["train_time"] == {"step_metric": "step"}
    assert metrics["train/*"]["step_metric"] == "step" and metrics["val/*"]["step_metric"] == "step"
    # every logged row carries the three x axes, so loss plots against step, examples seen and train time
    train_rows = [row for row in run.logged if "train/loss" in row]
    assert train_rows and all({"step", "examples", "train_time"} <= set(row) for row in train_rows)
    assert all({"train/examples_per_s", "train/peak_memory_gib"} <= set(row) for row in train_rows)  # throughput
    assert run.exit_code == 0


def test_wandb_tags_name_phi_for_presets():
    from tests.conftest import compose_config
    from research_optim.tracking import wandb_tags

    assert "phi:indicator_mean" in wandb_tags(compose_config(["logger=wandb", "optimizer=c_lion"]))
    tags = wandb_tags(compose_config(["logger=wandb", "optimizer=adamw", "experiment=lm_synthetic"]))
    assert not any(t.startswith(("phi:", "base:")) for t in tags) and "optimizer:adamw" in tags
