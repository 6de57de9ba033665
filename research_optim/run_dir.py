"""Run identity: a run id derived from the resolved config names the run directory.

The same config (and seed) always maps to the same directory, so re-running it resumes; different configs never
share one. Keys that say WHERE or HOW a run is watched (cluster, logger, run root, progress bar) do not change
the result and are left out of the id, so moving a run from a laptop to SLURM keeps its identity.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

# Top-level keys and dotted paths that do not affect what is computed.
NOT_IN_IDENTITY = ("cluster", "logger", "run", "train.progress", "train.device", "hydra")


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


class RunLock:
    """Refuse to run twice in one directory at the same time (same config launched twice).

    The lock file holds "host pid [slurm-job-id]"; a lock left by a dead process on this host, or by an earlier
    run of this same SLURM job (requeued, possibly onto another node), is taken over.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / ".lock"
        self.held = False

    def acquire(self) -> None:
        me = f"{socket.gethostname()} {os.getpid()} {os.environ.get('SLURM_JOB_ID', '')}".strip()
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if self._stale():
                    self.path.unlink(missing_ok=True)
                    continue
                owner = self.path.read_text().strip()
                raise RuntimeError(
                    f"run directory {self.path.parent} is in use by another process ({owner}); the same config is "
                    "already running. Change the seed or a hyperparameter, or wait for it to finish."
                ) from None
            with os.fdopen(fd, "w") as f:
                f.write(me)
            self.held = True
            return

    def _stale(self) -> bool:
        try:
            host, pid, *job = self.path.read_text().split()
        except (OSError, ValueError):
            return True
        if job and job[0] == os.environ.get("SLURM_JOB_ID"):
            return True
        if host != socket.gethostname():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return int(pid) == os.getpid()

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
