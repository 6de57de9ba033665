"""Sharded checkpoints (``train.parallel=fsdp``): every rank writes its own shards with torch.distributed.checkpoint.

The guarantees of the single-file checkpoint (``checkpoint``), for directories: ``<run_dir>/checkpoints/last.dcp``
(the newest) and ``prev.dcp`` (the one before). A save writes ``.last.dcp.tmp.<host>.<pid of rank 0>/`` — every
rank its shards (fsynced), then rank 0 ``meta.pt`` (everything that is not a sharded tensor: schedule, loop state,
every rank's RNG, the topology, the optimizer state's structure) — and only then rotates ``last.dcp`` to
``prev.dcp`` and the temp directory to ``last.dcp``; a crash at any instant leaves a complete checkpoint behind.
Reading one whose files are damaged or missing raises :class:`~research_optim.checkpoint.CorruptCheckpoint` on
every rank alike (DCP shares each rank's failure), so every rank falls back to ``prev.dcp`` together.

Each rank reads back exactly the shards it wrote, so a resume on the same topology is bit for bit.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import Tensor, nn
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.tensor import DTensor
from torch.optim import Optimizer

from research_optim import checkpoint
from research_optim.checkpoint import CorruptCheckpoint, Names
from research_optim.topology import check_resumable

NAMES = Names("last.dcp", "prev.dcp", "last.dcp.damaged", ".last.dcp.tmp.")
META = "meta.pt"
KINDS = (checkpoint.FILE, NAMES)  # a run directory may hold either kind (train.parallel=ddp | fsdp)


@dataclass(frozen=True)
class TensorSpec:
    """Where a tensor of the optimizer state was: its key among the saved tensors and its global layout."""

    key: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    placements: tuple[Any, ...] | None  # a DTensor's, sharded over the model's mesh; None: a plain tensor
    on_cpu: bool  # a plain tensor kept on the CPU (a step count), whatever the model's device


def _split(value: Any, tensors: dict[str, Tensor], key: str) -> Any:
    """``value`` with each tensor replaced by its :class:`TensorSpec` (the tensor goes into ``tensors``)."""
    if isinstance(value, Tensor):
        tensors[key] = value
        return TensorSpec(key, tuple(value.shape), value.dtype,
                          tuple(value.placements) if isinstance(value, DTensor) else None, value.device.type == "cpu")
    if isinstance(value, dict):
        return {k: _split(v, tensors, f"{key}/{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_split(v, tensors, f"{key}/{i}") for i, v in enumerate(value))
    return value


def _join(value: Any, tensor: Callable[[TensorSpec], Tensor]) -> Any:
    """``value`` with each :class:`TensorSpec` replaced by ``tensor(spec)``."""
    if isinstance(value, TensorSpec):
        return tensor(value)
    if isinstance(value, dict):
        return {k: _join(v, tensor) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_join(v, tensor) for v in value)
    return value


def _empty(spec: TensorSpec, like: DTensor) -> Tensor:
    """Where DCP loads the tensor of ``spec``: on ``like``'s mesh when sharded, else on its device (or the CPU)."""
    if spec.placements is None:
        return torch.empty(spec.shape, dtype=spec.dtype, device="cpu" if spec.on_cpu else like.to_local().device)
    return torch.distributed.tensor.empty(spec.shape, dtype=spec.dtype, device_mesh=like.device_mesh,
                                          placements=spec.placements)


def save(directory: Path, model: nn.Module, optimizer: Optimizer, meta: dict[str, Any]) -> Path:
    """Write the checkpoint (collective: every rank calls it); ``meta`` (rank 0's) holds the rest of the state."""
    directory.mkdir(parents=True, exist_ok=True)
    name = [f"{NAMES.temp_prefix}{socket.gethostname()}.{os.getpid()}"]
    dist.broadcast_object_list(name)  # rank 0's name: every rank writes into the same directory
    tmp, last, prev = directory / name[0], directory / NAMES.last, directory / NAMES.prev
    optimizer_tensors: dict[str, Tensor] = {}
    structure = _split(optimizer.state_dict(), optimizer_tensors, "optimizer")
    dcp.save({"model": model.state_dict(), "optimizer": optimizer_tensors}, checkpoint_id=str(tmp))
    if dist.get_rank() == 0:
        with open(tmp / META, "wb") as f:
            torch.save({**meta, "optimizer_structure": structure}, f)
            f.flush()
            os.fsync(f.fileno())
        checkpoint.fsync_directory(tmp)  # its entries, before it becomes last.dcp
        if prev.exists() and last.exists():
            checkpoint.remove(prev)
        if last.exists():
            os.replace(last, prev)
        os.replace(tmp, last)
        checkpoint.fsync_directory(directory)
    dist.barrier()
    return last


def peek(path: Path) -> dict[str, Any]:
    """The checkpoint's ``meta.pt`` (topology, run id, loop state), without its tensors."""
    return checkpoint.load(path / META)


def reader(model: nn.Module) -> Callable[[Path], dict[str, Any]]:
    """``read(path)`` → the whole checkpoint, ``model`` and ``optimizer`` state dicts included, for
    ``checkpoint.newest_readable``: loads this rank's shards into ``model`` and new tensors (collective)."""

    def read(path: Path) -> dict[str, Any]:
        meta = peek(path)
        like, tensors = next(p for p in model.parameters() if isinstance(p, DTensor)), {}

        def template(spec: TensorSpec) -> Tensor:  # where DCP loads the tensor, in place
            tensors[spec.key] = _empty(spec, like)
            return tensors[spec.key]

        optimizer_state = _join(meta.pop("optimizer_structure"), template)
        state = {"model": model.state_dict(), "optimizer": tensors}
        try:
            dcp.load(state, checkpoint_id=str(path))
        except CheckpointException as err:  # raised on every rank: a rank's files are missing or damaged
            rank, (failure, _trace) = next(iter(err.failures.items()))
            raise CorruptCheckpoint(f"checkpoint {path} cannot be read (rank {rank}: "
                                    f"{checkpoint.first_line(failure)})") from None
        except Exception as err:  # noqa: BLE001 — the same on every rank (e.g. DCP's .metadata is damaged)
            raise CorruptCheckpoint(f"checkpoint {path} cannot be read ({checkpoint.first_line(err)})") from None
        return {**meta, "model": state["model"], "optimizer": optimizer_state}

    return read


def check_every_kind(directory: Path, topology: dict[str, Any]) -> None:
    """``topology.check_resumable`` against the newest checkpoint of each kind in ``directory``: a resume under
    another ``train.parallel`` finds the other kind, and is refused as any change of topology."""
    for names, read in zip(KINDS, (checkpoint.peek, peek)):
        found = checkpoint.newest_readable(directory, read=read, names=names)
        if found is not None:
            check_resumable(found.checkpoint.get("topology"), topology, str(found.path))
