"""Run identity: what changes the numbers is in the run id (device type), what does not is out (the number of
processes, which only split the global batch); a resume on another topology is refused; every segment of a run
records its code version."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import research_optim
from tests.conftest import TINY, compose_config, read_metrics
from research_optim import distributed
from research_optim.errors import UserError
from research_optim.run_dir import run_id
from research_optim.topology import with_resolved_device
from research_optim.train import Trainer


def resolved_id(*overrides: str) -> str:
    return run_id(with_resolved_device(compose_config(list(overrides))))


def test_the_number_of_processes_stays_out_of_the_id_and_the_device_is_in():
    alone = resolved_id()
    assert resolved_id("cluster=torchrun", "cluster.nproc_per_node=4") == alone
    assert resolved_id("cluster=slurm_multinode", "cluster.partition=p") == alone
    cpu, cuda = resolved_id("train.device=cpu"), resolved_id("train.device=cuda")
    assert cpu != cuda
    assert alone == (cuda if torch.cuda.is_available() else cpu)  # auto is resolved here, on the submitting host
    assert resolved_id("cluster=slurm", "cluster.partition=p", "cluster.gpus_per_node=1") == cuda
    assert resolved_id("cluster=slurm", "cluster.partition=p") == cpu
    assert resolved_id("train.threads=3") == alone and resolved_id("train.progress=false") == alone
    assert resolved_id("train.micro_batch_size=8") == alone and resolved_id("train.peak_tflops=100") == alone
    assert resolved_id("train.parallel=fsdp") == alone  # shards or replicas: the same problem (in the topology)
    assert resolved_id("train.batch_size=32") != alone and resolved_id("train.precision=bf16") != alone
    assert resolved_id("train.compile_model=true") != alone  # compiled kernels round differently


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a host without CUDA")
def test_the_executing_process_refuses_a_device_it_does_not_have(tmp_path):
    with pytest.raises(UserError, match="train.device=cuda, but no CUDA device is visible"):
        distributed.detect("cuda")
    cfg = compose_config([*TINY, f"run.root={tmp_path}", "train.device=cuda"])
    with pytest.raises(UserError, match="set up for train.device=cuda .* runs on cpu"):
        Trainer(cfg, distributed.setup("cpu"))


def _interrupt_after_first_checkpoint(tiny_run, monkeypatch, root: Path) -> Path:
    original = Trainer.save_checkpoint

    class Interrupted(Exception):
        pass

    def save_then_die(self, window):
        original(self, window)
        raise Interrupted

    monkeypatch.setattr(Trainer, "save_checkpoint", save_then_die)
    with pytest.raises(Interrupted):
        tiny_run("model.dropout=0", root=root)
    monkeypatch.setattr(Trainer, "save_checkpoint", original)
    return next(root.glob("default/*/"))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_resume_on_another_number_of_processes_is_refused(tiny_run, tmp_path, monkeypatch):
    run_dir = _interrupt_after_first_checkpoint(tiny_run, monkeypatch, tmp_path)  # 1 process, step 20
    args = [*TINY, "model.dropout=0", f"run.root={tmp_path}"]
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    door = subprocess.run([sys.executable, "-m", "research_optim", *args, "cluster=torchrun"],
                          capture_output=True, text=True, timeout=120)
    assert door.returncode == 2 and "Traceback" not in door.stderr, door.stderr
    assert "was written by 1 process on cpu; this launch has 2 processes on cpu" in door.stderr
    assert "relaunch with the same number of processes" in door.stderr
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before

    # past the door (torchrun started by hand on the run's config), the ranks refuse it themselves, once
    ranks = subprocess.run([sys.executable, "-m", "research_optim.torchrun_agent", "--standalone",
                            "--nproc_per_node=2", "-m", "research_optim.worker", str(run_dir / "config.yaml")],
                           capture_output=True, text=True, timeout=240)
    assert ranks.returncode == 2, ranks.stderr
    assert ranks.stderr.count("error: checkpoint") == 1 and "Traceback" not in ranks.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "this launch has 2 processes" in summary["error"]

    resumed = tiny_run("model.dropout=0", root=tmp_path)  # the topology that wrote it: resumes
    assert resumed["status"] == "completed" and read_metrics(run_dir)[-1]["step"] == 40


def test_a_resume_with_another_number_of_micro_batches_is_refused(tiny_run, tmp_path, monkeypatch):
    run_dir = _interrupt_after_first_checkpoint(tiny_run, monkeypatch, tmp_path)  # 1 process, 1 micro-batch
    with pytest.raises(UserError, match="was written by 1 process on cpu; this launch has 1 process × 4 "
                                        "micro-batches on cpu"):
        tiny_run("model.dropout=0", "train.micro_batch_size=4", root=tmp_path)
    assert read_metrics(run_dir)[-1]["step"] == 20


def _code_copy(tmp_path: Path) -> Path:
    """The package and its configs in a git repository of their own: a code version this test can change."""
    source, code = Path(research_optim.__file__).parent.parent, tmp_path / "code"
    for part in ("research_optim", "conf"):
        shutil.copytree(source / part, code / part, ignore=shutil.ignore_patterns("__pycache__"))
    git = ["git", "-C", str(code), "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "v1"], check=True)
    return code


def _start_then_stop(args: list[str], tmp_path: Path, env: dict[str, str]) -> Path:
    """Start the run command ``args`` and SIGTERM it once it has logged (it checkpoints and exits 143); its run dir."""
    first = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while not list((tmp_path / "runs").glob("default/*/metrics.jsonl")):
        assert time.time() < deadline
        time.sleep(0.1)
    first.send_signal(signal.SIGTERM)  # checkpoint at the next step boundary
    assert first.wait(timeout=120) == 143
    return next((tmp_path / "runs").glob("default/*/"))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_every_segment_records_its_code_version_and_a_change_warns(tmp_path):
    code = _code_copy(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(code)}
    args = [sys.executable, "-m", "research_optim", "train.steps=1000", "train.log_every=25", "train.eval_every=0",
            "train.checkpoint_every=0", "train.progress=false", f"run.root={tmp_path / 'runs'}"]
    run_dir = _start_then_stop(args, tmp_path, env)
    stopped = json.loads((run_dir / "summary.json").read_text())
    (version_1,) = [s["commit"] for s in stopped["segments"]]
    assert len(version_1) == 40  # a clean tree: the bare commit

    with open(code / "research_optim" / "__init__.py", "a") as f:
        f.write("# an edit\n")
    second = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert second.returncode == 0, second.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    version_2 = f"{version_1}+dirty."
    assert [s["commit"][: len(version_2)] for s in summary["segments"]] == [version_1, version_2]
    assert summary["segments"][1]["step"] == stopped["final"]["step"] > 0
    assert "the result mixes code versions" in second.stderr and version_1 in second.stderr


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_every_segment_records_whether_its_optimizer_step_is_compiled_and_a_change_warns(tmp_path):
    args = [sys.executable, "-m", "research_optim", "optimizer=lib_adamw", "optimizer.implementation=compiled",
            "train.steps=1000", "train.log_every=25", "train.eval_every=0", "train.checkpoint_every=0",
            "train.progress=false", f"run.root={tmp_path / 'runs'}"]
    run_dir = _start_then_stop(args, tmp_path, {**os.environ, "RESEARCH_OPTIM_COMPILE": "1"})  # conftest: off

    second = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=240,
                            env={**os.environ, "RESEARCH_OPTIM_COMPILE": "0"})
    assert second.returncode == 0, second.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [s["compiled_step"] for s in summary["segments"]] == [True, False]
    assert "with the optimizer step eager, but earlier segments of this run ran it compiled" in second.stderr
