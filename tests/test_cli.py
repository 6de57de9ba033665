"""The command line as a researcher uses it: `python -m research_optim ...` in a subprocess (real Hydra)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import read_metrics
from research_optim.app import exit_sweep

pytestmark = pytest.mark.slow  # a subprocess per test


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "research_optim", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_help_lists_groups():
    out = cli("--help")
    assert out.returncode == 0
    for group in ("optimizer:", "model:", "data:", "cluster:", "logger:", "schedule:", "experiment:", "sweep:"):
        assert group in out.stdout, group


def test_cfg_job_prints_the_composed_config():
    out = cli("--cfg", "job", "optimizer=sgd", "optimizer.lr=0.05")
    assert out.returncode == 0
    assert "name: sgd" in out.stdout and "lr: 0.05" in out.stdout


def test_single_run_prints_summary_and_writes_run_dir(tmp_path):
    out = cli("train.steps=30", "train.eval_every=15", "train.progress=false", f"run.root={tmp_path}")
    assert out.returncode == 0, out.stderr
    assert "final val loss" in out.stdout and "steps/s" in out.stdout
    run_dir = Path(out.stdout.split("run directory")[-1].strip())
    assert (run_dir / "config.yaml").exists() and (run_dir / "summary.json").exists()
    assert (run_dir / "checkpoints" / "last.pt").exists()
    last = read_metrics(run_dir)[-1]
    assert (last["step"], last["split"]) == (30, "val")
    assert "id:" in (run_dir / "config.yaml").read_text()


def test_multirun_sweeps_a_grid_into_distinct_run_dirs(tmp_path):
    out = cli("-m", "seed=0,1", "optimizer.lr=0.001,0.003", "train.steps=10", "train.eval_every=0",
              "train.progress=false", f"run.root={tmp_path}", "run.group=mygrid")
    assert out.returncode == 0, out.stderr
    runs = sorted(p.parent for p in (tmp_path / "mygrid").glob("*/summary.json"))
    assert len(runs) == 4
    assert len({p.name for p in runs}) == 4


def test_a_sweep_runs_its_good_points_and_exits_1_for_a_bad_one(tmp_path):
    out = cli("-m", "optimizer.lr=0,0.001", "train.steps=5", "train.eval_every=0", "train.progress=false",
              f"run.root={tmp_path}")
    assert out.returncode == 1
    assert "error in sweep point [optimizer.lr=0" in out.stderr and "optimizer.lr=0: AdamW: lr must be > 0" in out.stderr
    assert "Traceback" not in out.stderr and "1 sweep point(s) did not complete" in out.stderr
    assert len(list(tmp_path.glob("default/*/summary.json"))) == 1


def test_exit_sweep_empties_its_failures_so_the_next_sweep_in_the_process_starts_clean():
    failures = ["optimizer.lr=0"]  # experiments/in_process.py runs several sweeps in one process
    with pytest.raises(SystemExit) as exit_:
        exit_sweep(failures, "sweep point(s)")
    assert exit_.value.code == 1 and failures == []
    exit_sweep(failures, "sweep point(s)")  # nothing failed since: returns
