"""`python -m research_optim cluster=slurm ...` end to end on the real local SLURM cluster.

Single-node job, 2-node × 2-task DDP job, a `-m` sweep, a crashing job reported FAILED, and a job preempted by
SLURM's time-limit signal that checkpoints, requeues itself and finishes with the metrics of an uninterrupted run.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from research_optim.jobs import job_table
from tests.slurm.slurm_jobs import TINY, cli, metrics, wait_for_jobs, warn_once_training

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(240)]


def test_single_node_job_waits_and_prints_summary(partitions, tmp_path):
    out = cli("cluster=slurm", "cluster.partition=debug", "cluster.wait=true", f"run.root={tmp_path}", *TINY)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "submitted SLURM job" in out.stdout and "final val loss" in out.stdout
    rows = wait_for_jobs(tmp_path, 1)  # sacct may say RUNNING for a moment after the result is written
    assert [r["state"] for r in rows] == ["COMPLETED"] and rows[0]["run_status"] == "completed"


def test_two_nodes_two_tasks_ddp_matches_single_process(partitions, tmp_path):
    out = cli("cluster=slurm_multinode", "cluster.partition=multi", "cluster.wait=true",
              f"run.root={tmp_path / 'slurm'}", *TINY)
    assert out.returncode == 0, out.stdout + out.stderr
    single = cli(f"run.root={tmp_path / 'local'}", *TINY)
    assert single.returncode == 0, single.stderr
    ddp_dir = next((tmp_path / "slurm" / "default").glob("*/metrics.jsonl")).parent
    one_dir = next((tmp_path / "local" / "default").glob("*/metrics.jsonl")).parent
    a, b = metrics(ddp_dir), metrics(one_dir)
    assert [(r["step"], r["split"], r["examples"]) for r in a] == [(r["step"], r["split"], r["examples"]) for r in b]
    for ra, rb in zip(a, b):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-4), (ra, rb)


def test_sweep_submits_every_point_and_returns(partitions, tmp_path):
    start = time.time()
    out = cli("-m", "cluster=slurm", "cluster.partition=debug", "seed=0,1", f"run.root={tmp_path}",
              "run.group=sweep", *TINY)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("submitted SLURM job") == 2
    assert time.time() - start < 60  # returns after submission, without waiting for the jobs
    rows = wait_for_jobs(tmp_path / "sweep", 2)
    assert sorted(r["state"] for r in rows) == ["COMPLETED", "COMPLETED"]
    status = subprocess.run([sys.executable, "-m", "research_optim.jobs", str(tmp_path)], capture_output=True,
                            text=True)
    assert status.returncode == 0 and "COMPLETED: 2" in status.stdout


def test_crashing_and_diverging_jobs_are_reported_failed_with_their_logs(partitions, tmp_path):
    # a data file that exists only in the job's imagination: the job crashes once it runs
    crash = cli("cluster=slurm", "cluster.partition=debug", f"run.root={tmp_path}", *TINY, "data=cifar10",
                f"data.path={tmp_path / 'missing.parquet'}")
    diverge = cli("cluster=slurm", "cluster.partition=debug", f"run.root={tmp_path}", *TINY, "optimizer.lr=1e3",
                  "train.nonfinite=skip")
    assert crash.returncode == 0 and diverge.returncode == 0, crash.stderr + diverge.stderr  # submissions succeed
    rows = sorted(wait_for_jobs(tmp_path, 2), key=lambda r: "digits" in r["run_dir"])  # crash, then diverge
    assert [r["state"] for r in rows] == ["FAILED", "FAILED"]
    assert [r["run_status"] for r in rows] == ["not started", "diverged"]
    status = subprocess.run([sys.executable, "-m", "research_optim.jobs", str(tmp_path)], capture_output=True,
                            text=True)
    assert status.returncode == 1
    assert all(f"log: {r['stdout']}" in status.stdout for r in rows)
    logs = [Path(r["stderr"]).read_text() + Path(r["stdout"]).read_text() for r in rows]
    assert "missing.parquet" in logs[0] and "steps in a row" in logs[1]


def test_a_config_already_queued_or_running_is_not_submitted_again(partitions, tmp_path):
    long = [*TINY, "train.steps=3000", "train.log_every=100", "train.eval_every=0", "train.checkpoint_every=0"]
    first = cli("cluster=slurm", "cluster.partition=debug", f"run.root={tmp_path}", *long)
    assert first.returncode == 0, first.stderr
    again = cli("cluster=slurm", "cluster.partition=debug", f"run.root={tmp_path}", *long)
    assert again.returncode == 2 and "Traceback" not in again.stderr, again.stderr
    assert "queued or running" in again.stderr or "in use by another process" in again.stderr
    assert len(job_table(tmp_path)) == 1
    subprocess.run(["scancel", job_table(tmp_path)[0]["job_id"]], check=True)


def test_preempted_job_requeues_and_matches_uninterrupted(partitions, tmp_path):
    long = [*TINY, "train.steps=3000", "train.eval_every=1000", "train.checkpoint_every=1000", "train.log_every=50",
            "model.hidden=512"]
    straight = cli("cluster=slurm", "cluster.partition=debug", f"run.root={tmp_path / 'a'}", *long)
    preempted = cli("cluster=slurm", "cluster.partition=debug", f"run.root={tmp_path / 'b'}", *long)
    assert straight.returncode == 0 and preempted.returncode == 0, preempted.stderr
    run_dir = warn_once_training(job_table(tmp_path / "b")[0], lines=3, timeout=120)
    rows = wait_for_jobs(tmp_path / "b", 1, timeout=200)
    assert rows[0]["state"] == "COMPLETED", rows
    log = Path(rows[0]["stdout"]).read_text() + Path(rows[0]["stderr"]).read_text()
    assert "requeueing SLURM job" in log and "resumed at step" in log
    wait_for_jobs(tmp_path / "a", 1)
    straight_dir = next((tmp_path / "a" / "default").glob("*/metrics.jsonl")).parent
    assert metrics(run_dir) == metrics(straight_dir)
