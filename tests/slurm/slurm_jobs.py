"""What the SLURM tests share: the CLI, a tiny run, waiting for jobs, and SLURM's time-limit warning mid-run."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import read_metrics, without_measurements
from research_optim.jobs import job_table

TINY = ["train.steps=40", "train.batch_size=16", "train.eval_every=20", "train.log_every=10",
        "train.checkpoint_every=20", "train.progress=false", "model.dropout=0"]


def cli(*args: str, timeout: float = 200) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "research_optim", *args], capture_output=True, text=True,
                          timeout=timeout)


def metrics(run_dir: Path) -> list[dict]:
    """What two runs of one config must agree on: metrics.jsonl without the machine's measurements."""
    return without_measurements(read_metrics(run_dir))


def wait_for_jobs(root: Path, n: int, timeout: float = 150) -> list[dict]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        rows = job_table(root)
        if len(rows) >= n and all(r["state"] not in ("PENDING", "RUNNING", "REQUEUED", "UNKNOWN") for r in rows):
            return rows
        time.sleep(2)
    raise AssertionError(f"jobs under {root} did not finish: {job_table(root)}")


def warn_once_training(row: dict, lines: int, timeout: float) -> Path:
    """Send the job of ``row`` (a job_table row) SIGUSR2, as SLURM does before a time limit, once its run has
    written ``lines`` metrics lines; returns its run directory."""
    import submitit

    run_dir = Path(row["run_dir"])
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (run_dir / "metrics.jsonl").exists() and len((run_dir / "metrics.jsonl").read_text().splitlines()) >= lines:
            break
        time.sleep(0.5)
    submitit.SlurmJob(row["folder"], row["job_id"])._interrupt(timeout=True)
    return run_dir
