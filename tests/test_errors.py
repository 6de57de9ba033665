"""Errors at the door: one clear message naming the key, before anything is trained or written."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import compose_config
from research_optim import checkpoint
from research_optim.app import run
from research_optim.config_checks import ConfigError


@pytest.mark.parametrize("override, message", [
    ("optimizer.lr=0", "optimizer.lr=0"),
    ("optimizer.lr=-1e-3", "optimizer.lr=-0.001"),
    ("optimizer.betas=[0.9,1.0]", r"optimizer.betas\[1\]=1.0"),
    ("optimizer.betas=[-0.1,0.99]", r"optimizer.betas\[0\]=-0.1"),
    ("optimizer.weight_decay=-1", "optimizer.weight_decay=-1"),
    ("train.steps=0", "train.steps=0"),
    ("train.precision=fp8", "train.precision='fp8'"),
    ("train.nonfinite=ignore", "train.nonfinite='ignore'"),
    ("schedule.final_lr_ratio=2", "schedule.final_lr_ratio=2"),
    ("train.grad_clip=0", "train.grad_clip=0"),
])
def test_bad_values_are_refused_before_anything_is_written(tmp_path, override, message):
    cfg = compose_config([f"run.root={tmp_path}", override])
    with pytest.raises(ConfigError, match=message):
        run(cfg)
    assert not any(tmp_path.iterdir()), "nothing may be written for an invalid config"


def test_all_problems_are_reported_together(tmp_path):
    cfg = compose_config([f"run.root={tmp_path}", "optimizer.lr=0", "train.steps=-1"])
    with pytest.raises(ConfigError) as err:
        run(cfg)
    assert "optimizer.lr" in str(err.value) and "train.steps" in str(err.value)


def test_model_data_mismatch_names_both(tmp_path):
    cfg = compose_config([f"run.root={tmp_path}", "model=gpt", "data=digits"])
    with pytest.raises(ConfigError, match="model=gpt takes text data, but data=digits is image data"):
        run(cfg)


def test_unknown_choice_lists_the_valid_ones(tmp_path):
    out = subprocess.run([sys.executable, "-m", "research_optim", "optimizer=nope", f"run.root={tmp_path}"],
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert "Could not find 'optimizer/nope'" in out.stderr and "adamw" in out.stderr


def test_cli_exit_code_and_message_for_bad_value(tmp_path):
    out = subprocess.run([sys.executable, "-m", "research_optim", "optimizer.lr=0", f"run.root={tmp_path}"],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "optimizer.lr=0: must be > 0" in out.stderr


def _nan_after(monkeypatch, n_calls: int) -> None:
    """Make the training loss NaN from the (n_calls+1)-th loss computation on."""
    from research_optim import train as train_module

    real, calls = train_module.loss_and_correct, {"n": 0}

    def patched(logits, targets):
        loss, correct = real(logits, targets)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] > n_calls:
                loss = loss * float("nan")
        return loss, correct

    monkeypatch.setattr(train_module, "loss_and_correct", patched)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_trainer, monkeypatch):
    _nan_after(monkeypatch, 25)
    trainer, summary = tiny_trainer("train.checkpoint_every=10", "train.log_every=5", "train.eval_every=0")
    assert summary["status"] == "diverged"
    assert "loss became nan by step 30" in summary["error"] and "last good checkpoint" in summary["error"]
    assert json.loads(Path(summary["run_dir"], "summary.json").read_text())["status"] == "diverged"
    ckpt = checkpoint.load(trainer.ckpt_path)
    assert ckpt["state"]["step"] == 20
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_nonfinite_skip_keeps_training(tiny_trainer, monkeypatch):
    _nan_after(monkeypatch, 25)
    trainer, summary = tiny_trainer("train.nonfinite=skip", "train.eval_every=0")
    assert summary["status"] == "completed"
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


@pytest.mark.parametrize("overrides, message", [
    (["cluster=slurm"], "cluster.partition is not set"),
    (["cluster=slurm", "cluster.partition=gpu", "cluster.gpus_per_node=2", "cluster.tasks_per_node=4"],
     "cluster.tasks_per_node=4 is more than cluster.gpus_per_node=2"),
    (["cluster=slurm_multinode", "cluster.partition=gpu", "cluster.nodes=0"], "cluster.nodes=0"),
    (["cluster=slurm", "cluster.partition=gpu", "+cluster.gpu_type=a100"], "unknown keys \\['gpu_type'\\]"),
    (["cluster=torchrun", "cluster.nproc_per_node=0"], "cluster.nproc_per_node=0"),
])
def test_bad_cluster_configs_fail_before_submission(tmp_path, overrides, message):
    cfg = compose_config([f"run.root={tmp_path}", *overrides])
    with pytest.raises(ConfigError, match=message):
        run(cfg)
    assert not any(tmp_path.iterdir())


def test_run_lock_refuses_a_concurrent_duplicate(tmp_path, monkeypatch):
    from research_optim.run_dir import RunLock

    first = RunLock(tmp_path)
    first.acquire()
    (tmp_path / ".lock").write_text("otherhost 1")  # held by a process elsewhere
    with pytest.raises(RuntimeError, match="in use by another process"):
        RunLock(tmp_path).acquire()
    (tmp_path / ".lock").write_text("otherhost 1 4242")  # an earlier run of this very SLURM job: taken over
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    lock = RunLock(tmp_path)
    lock.acquire()
    assert lock.held
