"""Run identity: a run id derived from the resolved config names the run directory.

The same config (and seed) always maps to the same directory, so re-running it resumes; different configs never
share one. Everything that changes the numbers is in the id: the whole config, with ``train.device`` resolved
to the device the run really uses (``topology.with_resolved_device``) and ``train.batch_size`` the global batch.
Left out are the keys that say WHERE or HOW a run is executed or watched — cluster (the number of processes splits
the same global batch), the micro-batch size (it splits each process's part), logger, run root/group/resume/tags,
progress bar, thread count, the peak FLOP/s that MFU is measured against, and the workload's declared validation
target (``workload.target``, a yardstick, not a setting) — so moving a run from a laptop to SLURM keeps its
identity; a resume on another number of processes, micro-batches or device is refused (checkpoint),
and the code version of every segment of a run is recorded in its summary.json.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from research_optim.errors import UserError

# Top-level keys and dotted paths that do not affect what is computed.
NOT_IN_IDENTITY = ("cluster", "logger", "run", "train.progress", "train.threads", "train.micro_batch_size",
                   "train.parallel", "train.peak_tflops", "hydra", "workload")


def _drop(d: dict[str, Any], dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        d = d.get(key, {})
        if not isinstance(d, dict):
            return
    d.pop(leaf, None)


def run_id(cfg: DictConfig) -> str:
    """10 hex digits of the SHA-256 of the resolved config without the keys in ``NOT_IN_IDENTITY``."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    for key in NOT_IN_IDENTITY:
        _drop(plain, key)
    blob = json.dumps(plain, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def run_name(cfg: DictConfig) -> str:
    label = f"{cfg.optimizer.name}-{cfg.model.name}-{cfg.data.name}-s{cfg.seed}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label)


def run_dir(cfg: DictConfig) -> Path:
    return Path(cfg.run.root) / str(cfg.run.group) / f"{run_name(cfg)}-{run_id(cfg)}"


class RunInUse(UserError, RuntimeError):
    pass


def slurm_job_active(job_id: str) -> bool | None:
    """Whether SLURM still runs (or will run) ``job_id``; None when there is no SLURM client to ask."""
    try:
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.returncode == 0 and bool(out.stdout.strip())


def process_owner() -> str:
    """This process as "host pid [slurm-job-id]": who holds a run directory (or a tuning trial)."""
    return f"{socket.gethostname()} {os.getpid()} {os.environ.get('SLURM_JOB_ID', '')}".strip()


def owner_is_gone(owner: str) -> bool:
    """Whether the process named by ``owner`` ("host pid [job]", see :func:`process_owner`) is gone for good: dead
    (same host), an earlier run of this same SLURM job (requeued, possibly onto another node), or its SLURM job no
    longer runs (other host). A process on another host without a SLURM job cannot be checked: never gone."""
    try:
        host, pid, *job = owner.split()
        pid_number = int(pid)
    except ValueError:
        return True
    if job and job[0] == os.environ.get("SLURM_JOB_ID"):
        return True
    if host != socket.gethostname():
        return bool(job) and slurm_job_active(job[0]) is False
    try:
        os.kill(pid_number, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return pid_number == os.getpid()


class RunLock:
    """Refuse to run twice in one directory at the same time (same config launched twice).

    The lock file holds :func:`process_owner`. It is stale — and taken over — when :func:`owner_is_gone`.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / ".lock"
        self.held = False

    def holder(self) -> str | None:
        """Who holds the lock ("host pid [job]"), or None when it is free or stale."""
        try:
            owner = self.path.read_text().strip()
        except OSError:
            return None
        return None if owner_is_gone(owner) else owner

    def acquire(self) -> None:
        me = process_owner()
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                owner = self.holder()
                if owner is None:
                    self.path.unlink(missing_ok=True)
                    continue
                raise RunInUse(in_use_message(self.path.parent, owner)) from None
            with os.fdopen(fd, "w") as f:
                f.write(me)
            self.held = True
            return

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def in_use_message(directory: Path, owner: str) -> str:
    return (f"run directory {directory} is in use by another process ({owner}): the same config is already "
            f"running. Wait for it to finish, or change the seed, a hyperparameter or run.group; if that process "
            f"is gone for good, delete {directory / '.lock'}.")
