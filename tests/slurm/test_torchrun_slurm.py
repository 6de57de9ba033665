"""``cluster.rank_launcher=torchrun`` on the real local SLURM cluster: one task per node starts torchrun.

Partition ``multi`` has two simulated nodes (n1, n2) on this one host; 2 nodes × 2 ranks rendezvous (c10d) on the
first node. The job trains like one process with the same global batch, and a job warned by SIGUSR2 (as before a
time limit) stops every rank at one step boundary, checkpoints, requeues itself and finishes with the metrics of an
uninterrupted run on the same topology, bit for bit.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import read_metrics, without_measurements
from research_optim.jobs import job_table

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

TINY = ["train.steps=40", "train.batch_size=16", "train.eval_every=20", "train.log_every=10",
        "train.checkpoint_every=20", "train.progress=false", "model.dropout=0"]
TWO_BY_TWO = ["cluster=slurm_torchrun", "cluster.partition=multi", "cluster.nodes=2", "cluster.nproc_per_node=2",
              "cluster.cpus_per_task=2"]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "research_optim", *args], capture_output=True, text=True,
                          timeout=300)


def metrics(root: Path) -> list[dict]:
    return without_measurements(read_metrics(next(root.glob("default/*/metrics.jsonl")).parent))


def wait_for_job(root: Path, timeout: float) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        rows = job_table(root)
        if rows and rows[0]["state"] not in ("PENDING", "RUNNING", "REQUEUED", "UNKNOWN"):
            return rows[0]
        time.sleep(2)
    raise AssertionError(f"the job under {root} did not finish: {job_table(root)}")


@pytest.mark.timeout(300)
def test_two_nodes_of_two_torchrun_ranks_match_one_process(partitions, tmp_path):
    out = cli(*TWO_BY_TWO, "cluster.wait=true", f"run.root={tmp_path / 'slurm'}", *TINY)
    assert out.returncode == 0, out.stdout + out.stderr
    single = cli(f"run.root={tmp_path / 'local'}", *TINY)
    assert single.returncode == 0, single.stderr
    a, b = metrics(tmp_path / "slurm"), metrics(tmp_path / "local")
    assert [(r["step"], r["split"], r["examples"]) for r in a] == [(r["step"], r["split"], r["examples"]) for r in b]
    for ra, rb in zip(a, b):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-4), (ra, rb)
    summary = next((tmp_path / "slurm").glob("default/*/summary.json")).read_text()
    assert '"world_size": 4' in summary and '"replicas_identical": true' in summary
    assert [r["state"] for r in job_table(tmp_path / "slurm")] == ["COMPLETED"]


@pytest.mark.timeout(600)
def test_a_warned_torchrun_job_checkpoints_requeues_and_matches_uninterrupted(partitions, tmp_path):
    import submitit

    long = [*TINY, "train.steps=1000", "train.eval_every=500", "train.checkpoint_every=500", "train.log_every=50",
            "model.hidden=512"]
    submitted = cli(*TWO_BY_TWO, f"run.root={tmp_path / 'preempted'}", *long)
    assert submitted.returncode == 0, submitted.stderr
    row = job_table(tmp_path / "preempted")[0]
    run_dir = Path(row["run_dir"])
    deadline = time.time() + 240
    while time.time() < deadline:  # wait until training is under way
        if (run_dir / "metrics.jsonl").exists() and len((run_dir / "metrics.jsonl").read_text().splitlines()) >= 2:
            break
        time.sleep(0.5)
    submitit.SlurmJob(row["folder"], row["job_id"])._interrupt(timeout=True)  # SIGUSR2, as before a time limit
    # the same topology without interruption, 4 local torchrun ranks (while the job waits to be requeued)
    straight = cli("cluster=torchrun", "cluster.nproc_per_node=4", f"run.root={tmp_path / 'straight'}", *long)
    assert straight.returncode == 0, straight.stderr
    finished = wait_for_job(tmp_path / "preempted", timeout=400)
    assert finished["state"] == "COMPLETED" and finished["run_status"] == "completed", finished
    log = (run_dir / "run.log").read_text()
    assert log.count("received SIGUSR2") == 1 and log.count("requeued SLURM job") == 1, log
    assert "resumed at step" in log
    assert metrics(tmp_path / "preempted") == metrics(tmp_path / "straight")
