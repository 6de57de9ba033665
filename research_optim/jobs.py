"""``python -m research_optim.jobs [DIR]`` — the SLURM jobs submitted under DIR (default: runs/), with their state.

Reads every ``jobs.jsonl`` the dispatcher appended to, asks ``sacct`` for the jobs' states in one call, and prints
one line per job: id, SLURM state, the run's own status and progress, and — for anything not completed — the log.
A job whose tasks failed is FAILED here (sacct's word), never "completed"; a diverged run ends its job with an
error, so it reads FAILED with run status "diverged". The exit code is 1 when any job failed or any run diverged.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from research_optim.run_dir import RunLock
from research_optim.tracking import MetricsFile, read_summary


def read_job_records(jobs_file: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in jobs_file.read_text().splitlines() if line.strip()]


def job_records(root: Path) -> list[dict[str, Any]]:
    return [record for path in sorted(root.rglob("jobs.jsonl")) for record in read_job_records(path)]


def sacct_states(job_ids: list[str]) -> dict[str, str]:
    """Job id → state (``RUNNING``, ``COMPLETED``, ``FAILED``, ``REQUEUED``, ``PENDING``, ...) for the whole job."""
    if not job_ids:
        return {}
    try:
        out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(job_ids)],
                             capture_output=True, text=True, check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as err:
        print(f"warning: sacct failed ({err}); states unknown", file=sys.stderr)
        return {}
    states = {}
    for line in out.splitlines():
        job_id, _, state = line.partition("|")
        states[job_id] = state.split()[0] if state else "UNKNOWN"  # "CANCELLED by 0" → CANCELLED
    return states


def run_progress(run_dir: Path) -> tuple[str, str]:
    """(the run's own status from summary.json — "interrupted" for a dead "running" one —, "step/steps")."""
    summary = read_summary(run_dir)
    status = summary["status"] if summary else "not started"
    if status == "running" and RunLock(run_dir).holder() is None:
        status = "interrupted"  # killed without a word (kill -9, node failure): its lock is stale
    records = MetricsFile(run_dir / "metrics.jsonl").records()
    step = records[-1]["step"] if records else 0
    steps = "?"
    config = run_dir / "config.yaml"
    if config.exists():
        steps = str((yaml.safe_load(config.read_text()) or {}).get("train", {}).get("steps", "?"))
    return status, f"{step}/{steps}"


def job_table(root: Path) -> list[dict[str, Any]]:
    records = job_records(root)
    states = sacct_states([r["job_id"] for r in records])
    rows = []
    for r in records:
        status, progress = run_progress(Path(r["run_dir"]))
        rows.append({**r, "state": states.get(r["job_id"], "UNKNOWN"), "run_status": status, "progress": progress})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m research_optim.jobs", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", default="runs", help="a runs root or a sweep group directory")
    args = parser.parse_args(argv)
    rows = job_table(Path(args.root))
    if not rows:
        print(f"no SLURM jobs recorded under {args.root}")
        return 0
    print(f"{'job':>12}  {'state':<11} {'run':<11} {'step':>11}  run directory")
    for r in rows:
        print(f"{r['job_id']:>12}  {r['state']:<11} {r['run_status']:<11} {r['progress']:>11}  {r['run_dir']}")
        if r["state"] not in ("COMPLETED", "RUNNING", "PENDING", "REQUEUED") or r["run_status"] == "diverged":
            print(f"{'':>12}  log: {r['stdout']}")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    print("  ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    failed = ("FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "CANCELLED")
    return 1 if any(r["state"] in failed or r["run_status"] in ("diverged", "failed") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
