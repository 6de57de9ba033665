"""The prepared GPU check (``benchmarks/gpu_check.py``) run on the CPU with ``--quick``: the check of the check.

It runs as the GPU machine would run it — a fresh process that cannot import Hydra, OmegaConf, submitit, wandb or
datasets (that machine has none) — and every row must come out PASS or MEASURED: none skipped, none an error.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ABSENT_ON_THE_GPU_MACHINE = ("hydra", "omegaconf", "submitit", "wandb", "datasets")
RUN_WITHOUT_THEM = f"""
import importlib.abc, runpy, sys

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {ABSENT_ON_THE_GPU_MACHINE!r}:
            raise ImportError(f"{{name}} is not installed on the GPU machine")

sys.meta_path.insert(0, Absent())
sys.argv[0] = "gpu_check"
runpy.run_module("benchmarks.gpu_check", run_name="__main__")
"""
ROWS = 7 * 2 + 1 + 7 + 6 * 2 + 2  # compiled == reference (fp32, bf16), micro-batches, step times, trainings


@pytest.mark.timeout(900)
def test_the_gpu_check_runs_every_row_on_a_cpu_without_the_packages_the_gpu_machine_lacks(tmp_path):
    out = tmp_path / "gpu_check.md"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", RUN_WITHOUT_THEM, "--device", "cpu", "--quick", "--budget-s", "1e9",
                           "--out", str(out)], capture_output=True, text=True, env=env, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split(" | ") for line in out.read_text().splitlines() if line.startswith("| ") and "---" not in line]
    results = [row[3] for row in rows[1:]]
    assert len(results) == ROWS and set(results) <= {"PASS", "MEASURED"}, out.read_text()
    assert out.read_text().splitlines()[0] in done.stdout  # the table printed is the table written
    checks = {row[0].removeprefix("| ") for row in rows[1:]}
    assert checks == {"compiled == reference", "micro-batches == one batch", "step time", "training"}
