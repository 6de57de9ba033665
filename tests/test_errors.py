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
    ("optimizer.lr=inf", "optimizer.lr=inf"),
    ("optimizer.lr=-1e-3", "optimizer=adamw refuses its arguments: Invalid learning rate: -0.001"),
    ("optimizer.betas=[0.9,1.0]", "optimizer=adamw refuses its arguments: Invalid beta parameter at index 1: 1.0"),
    ("optimizer.betas=[-0.1,0.99]", "Invalid beta parameter at index 0: -0.1"),
    ("optimizer.weight_decay=-1", "Invalid weight_decay value: -1"),
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
