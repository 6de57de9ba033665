"""What a launch runs on — processes, micro-batches per process, device type — decided on the submitting host.

``train.batch_size`` is the global batch, so the number of processes and of micro-batches (``train.micro_batch_size``)
do not change the optimisation problem and stay out of the run id; a checkpoint records them anyway, because
resuming bit for bit needs the same split (RNG streams, data slices, summation order). The device type changes the numbers (kernels, reduction order, TF32...), so
``train.device=auto`` is resolved here, before the run id is computed, into the device the run will really use.
"""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from research_optim.errors import UserError


def slurm_ranks_per_node(cluster: DictConfig) -> int:
    """Ranks on each node of a SLURM job: its tasks (``rank_launcher=srun``), or what torchrun starts on it
    (``rank_launcher=torchrun``: ``nproc_per_node``, null = one per GPU)."""
    if cluster.get("rank_launcher", "srun") == "torchrun":
        return int(cluster.nproc_per_node or cluster.gpus_per_node)
    return int(cluster.tasks_per_node)


def planned_world_size(cluster: DictConfig) -> int:
    """How many processes ``cluster`` starts: 1 here, ``nproc_per_node`` under torchrun, nodes × ranks per node on
    SLURM."""
    launcher = cluster.get("launcher", "local")
    if launcher == "torchrun":
        return int(cluster.nproc_per_node)
    if launcher == "slurm":
        return int(cluster.nodes) * slurm_ranks_per_node(cluster)
    return 1


def planned_micro_batches(train: DictConfig, world_size: int) -> int:
    """Micro-batches per process: the per-process batch over ``train.micro_batch_size`` (null: 1)."""
    per_rank = int(train.batch_size) // world_size
    return per_rank // int(train.micro_batch_size or per_rank)


def planned_topology(cfg: DictConfig) -> dict[str, Any]:
    """The topology this launch will have (``train.device`` already resolved)."""
    world = planned_world_size(cfg.cluster)
    return topology(world, cfg.train.device, planned_micro_batches(cfg.train, world), cfg.train.parallel)


def planned_device(cfg: DictConfig) -> str:
    """``train.device``, with ``auto`` resolved: SLURM → cuda when the job asks for GPUs; here/torchrun → cuda if
    this host has one. An explicit ``cpu`` or ``cuda`` is kept."""
    if cfg.train.device != "auto":
        return str(cfg.train.device)
    if cfg.cluster.get("launcher", "local") == "slurm":
        return "cuda" if (cfg.cluster.gpus_per_node or 0) > 0 else "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def with_resolved_device(cfg: DictConfig) -> DictConfig:
    """``cfg`` with ``train.device`` resolved (a copy when it changes): part of the run identity from here on."""
    device = planned_device(cfg)
    if cfg.train.device == device:
        return cfg
    cfg = cfg.copy()
    cfg.train.device = device
    return cfg


def topology(world_size: int, device: str, micro_batches: int = 1, parallel: str = "ddp") -> dict[str, Any]:
    """``parallel`` (``train.parallel``) is how the processes share the model: ``ddp`` replicas or ``fsdp`` shards
    (one process: ``ddp``, there is nothing to share)."""
    return {"world_size": int(world_size), "device": str(device), "micro_batches": int(micro_batches),
            "parallel": str(parallel) if world_size > 1 else "ddp"}


def describe(t: dict[str, Any]) -> str:
    n, k, parallel = t.get("world_size", "?"), t.get("micro_batches", 1), t.get("parallel", "ddp")
    return (f"{n} process{'es' if n != 1 else ''}{f' × {k} micro-batches' if k != 1 else ''} "
            f"on {t.get('device', '?')}{' with FSDP' if parallel == 'fsdp' else ''}")


class TopologyMismatch(UserError):
    pass


def check_resumable(saved: dict[str, Any] | None, current: dict[str, Any], checkpoint: str) -> None:
    """Refuse to resume ``checkpoint`` (written by ``saved``) on a different number of processes, micro-batches
    or device, or under another ``train.parallel``. (Checkpoints written before micro-batches and ``parallel``
    existed were written with one micro-batch and DDP.)"""
    if saved is not None and {"micro_batches": 1, "parallel": "ddp", **saved} == current:
        return
    raise TopologyMismatch(
        f"checkpoint {checkpoint} was written by {describe(saved or {})}; this launch has {describe(current)}. "
        "A run resumes bit for bit only on the topology that wrote it: relaunch with the same number of processes, "
        "train.micro_batch_size, device and train.parallel, or start a new run (another run.group, or run.resume=false to start this one over).")
