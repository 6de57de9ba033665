"""Errors at the door, part two: what the config alone cannot tell — the cluster, the file system, the run directory.

Checked on the submitting host after the config checks, before anything is written or submitted: the SLURM
partition exists and its nodes have the GPUs asked for (when ``sinfo`` is there to ask), a torchrun launch here
has a GPU per rank, ``run.root`` can be written, the files the run reads are there (``model.pretrained``, the
tokenizer, token shards made with that tokenizer from ``data.source``), the same config is not already running or
queued, a completed run to reuse ran the current code (``run.reuse``), and a checkpoint to resume from can be read
and was written on the topology this launch has.
The executing side repeats the run-directory checks (the state may change in between) with the same functions.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from omegaconf import DictConfig

from research_optim import sharded_checkpoint
from research_optim.environment import git_commit
from research_optim.errors import UserError
from research_optim.jobs import read_job_records
from research_optim.reuse import reuse_problem
from research_optim.run_dir import RunLock, in_use_message, run_dir, slurm_job_active
from research_optim.topology import planned_topology
from research_optim.tracking import read_summary


class PreflightError(UserError):
    pass


def _sinfo(*args: str) -> list[str] | None:
    """The lines ``sinfo -h ARGS`` prints, or None when there is no SLURM client or it does not answer."""
    if shutil.which("sinfo") is None:
        return None
    try:
        out = subprocess.run(["sinfo", "-h", *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None  # no answer: submission will say what is wrong
    return out.stdout.split() if out.returncode == 0 else None


def _partition_problem(cluster: DictConfig) -> str | None:
    listed = _sinfo("-o", "%P") if cluster.get("launcher") == "slurm" else None
    partitions = sorted({name.rstrip("*") for name in listed or []})
    if partitions and cluster.partition not in partitions:
        return (f"cluster.partition={cluster.partition}: this cluster has no such partition (sinfo lists "
                f"{', '.join(partitions)})")
    return None


def _gpu_problem(cfg: DictConfig) -> str | None:
    """More GPUs per node than the partition's nodes have (SLURM's GRES), or more torchrun ranks than GPUs here."""
    c = cfg.cluster
    if c.get("launcher") == "torchrun" and cfg.train.device == "cuda":
        import torch

        if c.nproc_per_node > torch.cuda.device_count():
            return (f"cluster.nproc_per_node={c.nproc_per_node} ranks on cuda, but this host has "
                    f"{torch.cuda.device_count()} GPUs: one rank drives one GPU")
    if c.get("launcher") != "slurm" or not c.gpus_per_node:
        return None
    gres = _sinfo("-p", str(c.partition), "-o", "%G")
    if gres is None:
        return None
    counts = [int(m.group(1)) for entry in gres for m in re.finditer(r"gpu(?::[^:,(]+)?:(\d+)", entry)]
    if max(counts, default=0) < c.gpus_per_node:
        return (f"cluster.gpus_per_node={c.gpus_per_node}, but the nodes of partition {c.partition} have "
                f"{f'at most {max(counts)} GPUs' if counts else 'no GPUs'} (sinfo GRES: {' '.join(gres)}); ask for "
                "fewer GPUs per node or choose a GPU partition")
    return None


def _unwritable_problem(root: str, directory: Path) -> str | None:
    """Whether the run directory can be created (or written, if it exists), without writing anything."""
    probe = directory
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"run.root={root}: {probe} is a file, not a directory; choose another run.root or move the file"
    if not os.access(probe, os.W_OK | os.X_OK):
        why = "read-only file system" if os.statvfs(probe).f_flag & os.ST_RDONLY else "permission denied"
        return f"run.root={root}: cannot write in {probe} ({why}); choose another run.root"
    return None


def _input_problem(cfg: DictConfig) -> str | None:
    """The cheap checks of what the run will read: weights, tokenizer, prepared shards (the loaders repeat them)."""
    from omegaconf import OmegaConf

    from research_optim.build import instantiate
    from research_optim.data.token_shards import check_prepared, read_meta
    from research_optim.models.pretrained import check_path

    try:
        if cfg.model.get("pretrained"):
            check_path(cfg.model.pretrained)
        if "tokenizer" in cfg.data:
            tokenizer = instantiate(cfg.data.tokenizer)
            if "shards" in cfg.data:
                check_prepared(read_meta(cfg.data.shards), cfg.data.shards, tokenizer,
                               OmegaConf.to_container(cfg.data.source, resolve=True))
    except UserError as err:
        return str(err)
    return None


def _queued_jobs(directory: Path) -> list[str]:
    """SLURM jobs submitted for this run directory that are still pending or running."""
    jobs_file = directory.parent / "jobs.jsonl"
    if not jobs_file.exists():
        return []
    ids = {r["job_id"] for r in read_job_records(jobs_file) if r["run_dir"] == str(directory)}
    return sorted(job for job in ids if slurm_job_active(job))


def check_run_directory(cfg: DictConfig, directory: Path) -> None:
    """Refuse a run directory that is in use, or whose checkpoint this launch cannot resume."""
    owner = RunLock(directory).holder()
    if owner is not None:
        raise PreflightError(in_use_message(directory, owner))
    queued = _queued_jobs(directory)
    if queued:
        raise PreflightError(f"run directory {directory} already has SLURM job {', '.join(queued)} queued or "
                             f"running for this config; wait for it (python -m research_optim.jobs "
                             f"{directory.parent}) or scancel it first")
    summary = read_summary(directory)
    if summary and summary.get("status") == "completed" and cfg.run.resume:
        problem = reuse_problem(directory, summary, cfg.run.reuse, git_commit())
        if problem:
            raise PreflightError(problem)
    if not cfg.run.resume or (summary and summary.get("status") == "completed"):
        return
    sharded_checkpoint.check_every_kind(directory / "checkpoints", planned_topology(cfg))


def preflight(cfg: DictConfig) -> None:
    """Raise :class:`~research_optim.errors.UserError` when this launch cannot start; writes nothing."""
    directory = run_dir(cfg)
    for problem in (_partition_problem(cfg.cluster) or _gpu_problem(cfg),
                    _unwritable_problem(str(cfg.run.root), directory), _input_problem(cfg)):
        if problem:
            raise PreflightError(problem)
    if directory.is_dir():
        check_run_directory(cfg, directory)
