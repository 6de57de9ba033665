"""``cluster.rank_launcher=torchrun`` on the real local SLURM cluster: one task per node starts torchrun.

Partition ``multi`` has two simulated nodes (n1, n2) on this one host; 2 nodes × 2 ranks rendezvous (c10d) on the
first node. The job trains like one process with the same global batch, and a job warned by SIGUSR2 (as before a
time limit) stops every rank at one step boundary, checkpoints, requeues itself and finishes with the metrics of an
uninterrupted run on the same topology, bit for bit.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from research_optim.jobs import job_table
from tests.slurm.slurm_jobs import TINY, cli, metrics, wait_for_jobs, warn_once_training

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

TWO_BY_TWO = ["cluster=slurm_torchrun", "cluster.partition=multi", "cluster.nodes=2", "cluster.nproc_per_node=2",
              "cluster.cpus_per_task=2"]


def run_dir_under(root: Path) -> Path:
    return next(root.glob("default/*/metrics.jsonl")).parent


@pytest.mark.timeout(300)
def test_two_nodes_of_two_torchrun_ranks_match_one_process(partitions, tmp_path):
    out = cli(*TWO_BY_TWO, "cluster.wait=true", f"run.root={tmp_path / 'slurm'}", *TINY, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    single = cli(f"run.root={tmp_path / 'local'}", *TINY)
    assert single.returncode == 0, single.stderr
    a, b = metrics(run_dir_under(tmp_path / "slurm")), metrics(run_dir_under(tmp_path / "local"))
    assert [(r["step"], r["split"], r["examples"]) for r in a] == [(r["step"], r["split"], r["examples"]) for r in b]
    for ra, rb in zip(a, b):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-4), (ra, rb)
    summary = (run_dir_under(tmp_path / "slurm") / "summary.json").read_text()
    assert '"world_size": 4' in summary and '"replicas_identical": true' in summary
    assert [r["state"] for r in wait_for_jobs(tmp_path / "slurm", 1)] == ["COMPLETED"]


@pytest.mark.timeout(600)
def test_a_warned_torchrun_job_checkpoints_requeues_and_matches_uninterrupted(partitions, tmp_path):
    long = [*TINY, "train.steps=1000", "train.eval_every=500", "train.checkpoint_every=500", "train.log_every=50",
            "model.hidden=512"]
    submitted = cli(*TWO_BY_TWO, f"run.root={tmp_path / 'preempted'}", *long)
    assert submitted.returncode == 0, submitted.stderr
    run_dir = warn_once_training(job_table(tmp_path / "preempted")[0], lines=2, timeout=240)
    # the same topology without interruption, 4 local torchrun ranks (while the job waits to be requeued)
    straight = cli("cluster=torchrun", "cluster.nproc_per_node=4", f"run.root={tmp_path / 'straight'}", *long,
                   timeout=300)
    assert straight.returncode == 0, straight.stderr
    finished = wait_for_jobs(tmp_path / "preempted", 1, timeout=400)[0]
    assert finished["state"] == "COMPLETED" and finished["run_status"] == "completed", finished
    log = (run_dir / "run.log").read_text()
    assert log.count("received SIGUSR2") == 1 and log.count("requeueing SLURM job") == 1, log
    assert "resumed at step" in log
    assert metrics(run_dir) == metrics(run_dir_under(tmp_path / "straight"))
