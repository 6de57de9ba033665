"""``train.parallel=fsdp`` on the real local SLURM cluster: 2 simulated nodes × 1 torchrun rank shard the model
and write one sharded checkpoint; the run equals 2 local DDP ranks with the same global batch."""
from __future__ import annotations

from pathlib import Path

import pytest

from research_optim import sharded_checkpoint
from tests.slurm.slurm_jobs import TINY, cli, metrics, wait_for_jobs

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

RUN = [*TINY, "optimizer=c_adamw"]


def run_dir_under(root: Path) -> Path:
    return next(root.glob("default/*/metrics.jsonl")).parent


@pytest.mark.timeout(400)
def test_fsdp_on_two_slurm_nodes_equals_two_ddp_ranks(partitions, tmp_path):
    out = cli("cluster=slurm_torchrun", "cluster.partition=multi", "cluster.nodes=2", "cluster.nproc_per_node=1",
              "cluster.cpus_per_task=1", "cluster.wait=true", "train.parallel=fsdp", f"run.root={tmp_path / 'fsdp'}",
              *RUN, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    ddp = cli("cluster=torchrun", "cluster.nproc_per_node=2", f"run.root={tmp_path / 'ddp'}", *RUN)
    assert ddp.returncode == 0, ddp.stderr
    sharded, replicated = run_dir_under(tmp_path / "fsdp"), run_dir_under(tmp_path / "ddp")
    a, b = metrics(sharded), metrics(replicated)
    assert [(r["step"], r["split"]) for r in a] == [(r["step"], r["split"]) for r in b]
    for ra, rb in zip(a, b):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-6), (ra, rb)
    assert sharded.name == replicated.name  # the same optimisation problem, the same run id
    checkpoints = sharded / "checkpoints"
    assert {p.name for p in (checkpoints / "last.dcp").glob("*.distcp")} == {"__0_0.distcp", "__1_0.distcp"}
    assert sharded_checkpoint.peek(checkpoints / "last.dcp")["topology"]["parallel"] == "fsdp"
    assert [r["state"] for r in wait_for_jobs(tmp_path / "fsdp", 1)] == ["COMPLETED"]
