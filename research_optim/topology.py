"""What a launch runs on — the number of processes and the device type — decided on the submitting host.

``train.batch_size`` is the global batch, so the number of processes does not change the optimisation problem
and stays out of the run id; a checkpoint records it anyway, because resuming bit for bit needs the same ranks
(RNG streams, data slices). The device type changes the numbers (kernels, reduction order, TF32...), so
``train.device=auto`` is resolved here, before the run id is computed, into the device the run will really use.
"""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from research_optim.errors import UserError


def planned_world_size(cluster: DictConfig) -> int:
    """How many processes ``cluster`` starts: 1 here, ``nproc_per_node`` under torchrun, nodes × tasks on SLURM."""
    launcher = cluster.get("launcher", "local")
    if launcher == "torchrun":
        return int(cluster.nproc_per_node)
    if launcher == "slurm":
        return int(cluster.nodes) * int(cluster.tasks_per_node)
    return 1


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


def topology(world_size: int, device: str) -> dict[str, Any]:
    return {"world_size": int(world_size), "device": str(device)}


def describe(t: dict[str, Any]) -> str:
    n = t.get("world_size", "?")
    return f"{n} process{'es' if n != 1 else ''} on {t.get('device', '?')}"


class TopologyMismatch(UserError):
    pass


def check_resumable(saved: dict[str, Any] | None, current: dict[str, Any], checkpoint: str) -> None:
    """Refuse to resume ``checkpoint`` (written by ``saved``) on a different number of processes or device."""
    if saved == current:
        return
    raise TopologyMismatch(
        f"checkpoint {checkpoint} was written by {describe(saved or {})}; this launch has {describe(current)}. "
        "A run resumes bit for bit only on the topology that wrote it: relaunch with the same number of processes "
        "and device, or start a new run (another run.group, or run.resume=false to start this one over).")
