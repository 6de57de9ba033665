"""Errors at the door: one clear message naming the key, before anything is trained or written."""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys

import pytest

from tests.conftest import compose_config
from research_optim.app import run
from research_optim.config_checks import ConfigError
from research_optim.preflight import PreflightError
from research_optim.run_dir import run_dir
from research_optim.topology import with_resolved_device


@pytest.mark.parametrize("override, message", [
    ("optimizer.lr=0", "optimizer.lr=0"),
    ("optimizer.lr=inf", "optimizer.lr=inf"),
    ("optimizer.lr=-1e-3", r"optimizer.lr=-0.001: Invalid learning rate: -0.001 \(optimizer=adamw refuses it"),
    ("optimizer.betas=[0.9,1.0]", r"optimizer.betas=\[0.9, 1.0\]: Invalid beta parameter at index 1: 1.0"),
    ("optimizer.betas=[-0.1,0.99]", "Invalid beta parameter at index 0: -0.1"),
    ("optimizer.weight_decay=-1", "optimizer.weight_decay=-1: Invalid weight_decay value: -1"),
    ("+optimizer.lrr=1", "optimizer.lrr=1: AdamW.__init__.. got an unexpected keyword argument 'lrr'"),
    ("optimizer=sgd optimizer.momentum=0", "optimizer.nesterov=true: Nesterov momentum requires a momentum"),
    ("optimizer=sf_wrapper optimizer.base.betas=[0.9,1.5]", r"optimizer.base.betas=\[0.9, 1.5\]: Invalid beta"),
    ("optimizer=sf_wrapper optimizer.base.lr=0", "optimizer.base.lr=0: AdamW: lr must be > 0, got 0"),
    ("train.steps=0", "train.steps=0"),
    ("train.precision=fp8", "train.precision='fp8'"),
    ("train.nonfinite=ignore", "train.nonfinite='ignore'"),
    ("schedule.final_lr_ratio=2", "schedule.final_lr_ratio=2"),
    ("train.grad_clip=0", "train.grad_clip=0"),
    ("train.threads=0", "train.threads=0"),
    ("train.max_consecutive_skips=0", "train.max_consecutive_skips=0"),
    ("train.micro_batch_size=0", "train.micro_batch_size=0: must be a positive integer"),
    ("train.steps=1.5", "train.steps=1.5: must be a positive integer"),
    ("+train.stpes=10", r"train has unknown keys \['stpes'\]; allowed: steps, batch_size"),
    ("run.resume=maybe", "run.resume='maybe': must be true or false"),
    ("schedule.name=exp", "schedule.name='exp': choose one of cosine, linear, constant"),
    ("train.micro_batch_size=5", r"train.micro_batch_size=5 must divide each process's batch of 64 "
                                 r"\(train.batch_size=64 over the 1 process of cluster=local\): choose one of "
                                 r"\[1, 2, 4, 8, 16, 32, 64\], or null"),
    ("train.peak_tflops=0", "train.peak_tflops=0: must be > 0"),
    ("train.compile_model=maybe", "train.compile_model='maybe': must be true or false"),
    ("optimizer=sf_sgd optimizer.momentum=0",
     r"optimizer.momentum=0: SGDScheduleFree: momentum must be in \(0, 1\) \(.*lib_sgd.*\), got 0"),
    ("optimizer=sgd optimizer.momentum=1.0", r"optimizer.momentum=1.0: SGD: momentum must be in \[0, 1\), got 1.0"),
    ("optimizer=salsa optimizer.c=1.5", r"optimizer.c=1.5: SaLSA: c must be in \(0, 1\), got 1.5"),
    ("optimizer._target_=torch.optim.NoSuchOptimizer", "Error locating target 'torch.optim.NoSuchOptimizer'"),
])
def test_bad_values_are_refused_before_anything_is_written(tmp_path, override, message):
    cfg = compose_config([f"run.root={tmp_path}", *override.split()])
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


@pytest.mark.slow  # a subprocess
def test_unknown_choice_lists_the_valid_ones(tmp_path):
    out = subprocess.run([sys.executable, "-m", "research_optim", "optimizer=nope", f"run.root={tmp_path}"],
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert "Could not find 'optimizer/nope'" in out.stderr and "adamw" in out.stderr


@pytest.mark.slow  # a subprocess each
@pytest.mark.parametrize("overrides, message", [
    (["optimizer.lr=0"], "optimizer.lr=0: AdamW: lr must be > 0"),
    (["train.micro_batch_size=5"], "train.micro_batch_size=5 must divide each process's batch of 64"),
    (["cluster=slurm_torchrun", "cluster.partition=multi", "cluster.tasks_per_node=2", "cluster.nproc_per_node=2"],
     "so the tasks must equal the nodes: set cluster.tasks_per_node=1, not 2"),
])
def test_cli_exit_code_and_message_for_bad_value(tmp_path, overrides, message):
    out = subprocess.run([sys.executable, "-m", "research_optim", *overrides, f"run.root={tmp_path / 'runs'}"],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert message in out.stderr and len(out.stderr.strip().splitlines()) <= 2, out.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("overrides, message", [
    (["cluster=slurm"], "cluster.partition is not set"),
    (["cluster=slurm", "cluster.partition=gpu", "cluster.gpus_per_node=2", "cluster.tasks_per_node=4"],
     "cluster.tasks_per_node=4 does not match cluster.gpus_per_node=2: one task drives one GPU"),
    (["cluster=slurm", "cluster.partition=gpu", "cluster.nproc_per_node=2"],
     "cluster.nproc_per_node=2 applies to cluster.rank_launcher=torchrun only"),
    (["cluster=slurm", "cluster.partition=gpu", "cluster.rank_launcher=mpirun"], "cluster.rank_launcher='mpirun'"),
    (["cluster=slurm_torchrun", "cluster.partition=gpu", "cluster.tasks_per_node=2", "cluster.nproc_per_node=2"],
     "the tasks must equal the nodes: set cluster.tasks_per_node=1, not 2"),
    (["cluster=slurm_torchrun", "cluster.partition=gpu"],
     "cluster.rank_launcher=torchrun on CPU nodes needs cluster.nproc_per_node"),
    (["cluster=slurm_torchrun", "cluster.partition=gpu", "cluster.gpus_per_node=4", "cluster.nproc_per_node=2"],
     "cluster.nproc_per_node=2 does not match cluster.gpus_per_node=4"),
    (["cluster=slurm_torchrun", "cluster.partition=gpu", "cluster.gpus_per_node=4", "train.batch_size=12"],
     "train.batch_size=12 is the global batch and must divide by the 8 processes of cluster=slurm_torchrun"),
    (["cluster=slurm_multinode", "cluster.partition=gpu", "cluster.nodes=0"], "cluster.nodes=0"),
    (["cluster=slurm", "cluster.partition=gpu", "cluster.timeout_min=2"],
     r"cluster.timeout_min=2 with cluster.signal_delay_s=90: SLURM may send .* 0 s after the start .* raise "
     r"cluster.timeout_min to at least 3 or lower cluster.signal_delay_s"),
    (["cluster=slurm", "cluster.partition=gpu", "+cluster.gpu_type=a100"], "unknown keys \\['gpu_type'\\]"),
    (["cluster=torchrun", "cluster.nproc_per_node=0"], "cluster.nproc_per_node=0"),
    (["cluster=torchrun", "cluster.nproc_per_node=3"],
     "train.batch_size=64 is the global batch and must divide by the 3 processes of cluster=torchrun"),
    (["cluster=slurm_multinode", "cluster.partition=gpu", "train.batch_size=6"],
     "train.batch_size=6 is the global batch and must divide by the 4 processes"),
    (["cluster=slurm", "cluster.partition=gpu", "train.device=cuda"], "train.device=cuda but cluster.gpus_per_node=0"),
    (["cluster=torchrun", "train.batch_size=16", "train.micro_batch_size=3"],
     r"train.micro_batch_size=3 must divide each process's batch of 8 \(train.batch_size=16 over the 2 processes"),
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


def test_a_run_root_that_cannot_be_written_is_refused(tmp_path):
    (tmp_path / "file").write_text("in the way")  # root ignores chmod; a file where a directory must go stops it
    cfg = compose_config([f"run.root={tmp_path / 'file' / 'runs'}"])
    with pytest.raises(PreflightError, match=f"run.root={tmp_path / 'file' / 'runs'}: {tmp_path / 'file'} is a "
                                             "file, not a directory"):
        run(cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"] and (tmp_path / "file").read_text() == "in the way"


def test_a_second_launch_of_a_running_config_is_refused_at_the_door(tmp_path):
    cfg = compose_config([f"run.root={tmp_path}"])
    directory = run_dir(with_resolved_device(cfg))
    directory.mkdir(parents=True)
    running = subprocess.Popen(["sleep", "300"])  # a live process on this host holds the lock
    try:
        (directory / ".lock").write_text(f"{socket.gethostname()} {running.pid}")
        with pytest.raises(PreflightError, match="is in use by another process .* already running"):
            run(cfg)
    finally:
        running.kill()
        running.wait()
    assert [p.name for p in directory.iterdir()] == [".lock"]


@pytest.mark.slurm
@pytest.mark.slow
def test_a_partition_the_cluster_does_not_have_is_refused(partitions, tmp_path):
    cfg = compose_config([f"run.root={tmp_path}", "cluster=slurm", "cluster.partition=nonexistent"])
    with pytest.raises(PreflightError, match="cluster.partition=nonexistent: this cluster has no such partition "
                                             f"\\(sinfo lists .*{sorted(partitions)[0]}"):
        run(cfg)
    assert not any(tmp_path.iterdir())


@pytest.mark.slurm
@pytest.mark.slow
def test_more_gpus_than_the_partitions_nodes_have_is_refused(partitions, tmp_path):
    cfg = compose_config([f"run.root={tmp_path}", "cluster=slurm_torchrun", "cluster.partition=multi",
                          "cluster.gpus_per_node=2"])
    with pytest.raises(PreflightError, match=r"cluster.gpus_per_node=2, but the nodes of partition multi have no "
                                             r"GPUs \(sinfo GRES: \(null\)\)"):
        run(cfg)
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["optimizer=sf_sgd", "optimizer.momentum=0"], "momentum must be in (0, 1) (the interpolation of y between"),
    (["run.root={tmp}/file/runs"], "is a file, not a directory"),
    (["cluster=slurm", "cluster.partition=nonexistent"], "no such partition"),
], ids=["optimizer", "root", "partition"])
def test_the_command_line_prints_expected_errors_in_one_or_two_lines(tmp_path, args, message):
    if "cluster=slurm" in args and shutil.which("sinfo") is None:
        pytest.skip("no SLURM client to ask for partitions")
    (tmp_path / "file").write_text("in the way")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    out = subprocess.run([sys.executable, "-m", "research_optim", f"run.root={tmp_path / 'runs'}", *args],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) <= 2, out.stderr
    assert not (tmp_path / "runs").exists()
