"""Intra-op threads: chosen from the CPUs a process is allotted (affinity, SLURM, ranks per node, an
OMP_NUM_THREADS cap) and the model's size, overridable with train.threads, and recorded in summary.json."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from research_optim.threads import TINY_WORK, choose_threads, cpu_allotment

BIG = TINY_WORK * 10


@pytest.fixture
def plain_env(monkeypatch):
    for variable in ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(variable, raising=False)
    return monkeypatch


def test_the_allotment_is_the_affinity_capped_by_slurm_and_omp_and_shared_by_local_ranks(plain_env):
    affinity = len(os.sched_getaffinity(0))
    assert cpu_allotment()[0] == affinity
    for variable in ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS"):
        plain_env.setenv(variable, "1")
        assert cpu_allotment()[0] == 1
        plain_env.delenv(variable)
    plain_env.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun: the ranks on a node share its CPUs
    assert cpu_allotment() == (max(1, affinity // 2), f"affinity {affinity}, 2 ranks per node")


def test_tiny_models_get_one_thread_and_train_threads_overrides(plain_env):
    assert choose_threads(None, work=1000)[0] == 1
    assert choose_threads(None, work=BIG)[0] == len(os.sched_getaffinity(0))
    assert choose_threads(3, work=1000) == (3, "train.threads")


def _threads_of_a_run(tmp_path, prefix: list[str], *overrides: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK")}
    out = subprocess.run([*prefix, sys.executable, "-m", "research_optim", "model.hidden=1400", "train.steps=2",
                          "train.eval_every=0", "train.log_every=1", "train.progress=false",
                          f"run.root={tmp_path}", *overrides], env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = out.stdout.split("run directory")[-1].strip()
    return json.loads(open(os.path.join(run_dir, "summary.json")).read())["environment"]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("taskset") is None, reason="needs taskset (util-linux)")
def test_a_process_pinned_to_one_cpu_uses_one_thread(tmp_path):
    pinned = _threads_of_a_run(tmp_path / "pinned", ["taskset", "-c", "0"])  # a model far above the tiny size
    assert pinned["threads"] == 1 and "affinity 1" in pinned["threads_reason"]
    assert len(pinned["load_average"]) == 3
    if len(os.sched_getaffinity(0)) > 1:
        free = _threads_of_a_run(tmp_path / "free", [])
        assert free["threads"] == len(os.sched_getaffinity(0))
