"""FSDP2 (``train.parallel=fsdp``): parameters, gradients and optimizer state sharded over the ranks.

``torch.distributed.fsdp.fully_shard`` shards every parameter along its first dimension over a 1-D mesh of all
ranks; its parameters become ``DTensor``s, and an optimizer built on them keeps its state sharded the same way.
The blocks of a model (the children of its ``nn.Sequential``/``nn.ModuleList`` containers) are sharded units of
their own, so only one block's parameters are gathered at a time; the root holds the rest. The gradient is the
mean over the ranks, reduce-scattered, as DDP's all-reduce: the two compute the same steps (tested for every
optimizer, ``tests/test_fsdp.py``). How each optimizer steps sharded tensors: ``optim.sharded``.
"""
from __future__ import annotations

from contextlib import contextmanager
from importlib import import_module
from operator import attrgetter
from typing import Iterator

import torch
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard

from research_optim.errors import UserError
from research_optim.protocols import has_batch_norm

__all__ = ["shard", "no_gradient_sync", "forget_meshes"]


def shard(model: nn.Module, device: torch.device, world_size: int) -> None:
    """Shard ``model`` in place over ``world_size`` ranks (the process group is up)."""
    if has_batch_norm(model):
        raise UserError("train.parallel=fsdp with a BatchNorm model: FSDP keeps each rank's BatchNorm statistics "
                        "apart (DDP broadcasts rank 0's), so a checkpoint could not hold them; use train.parallel=ddp")
    mesh = init_device_mesh(device.type, (world_size,))
    containers = [m for m in model.modules() if isinstance(m, (nn.Sequential, nn.ModuleList))]
    blocks = [child for c in containers for child in c.children() if any(True for _ in child.parameters())]
    for block in reversed(blocks):  # innermost first: a unit owns the parameters no unit inside it took
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)


@contextmanager
def no_gradient_sync(model: FSDPModule) -> Iterator[None]:
    """Accumulate unsharded gradients without reduce-scattering them (all micro-batches but the last)."""
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


# DTensor's caches of sharding decisions, keyed by (or holding) the meshes they saw: (module, what clears it)
_MESH_CACHES = [("torch.distributed.tensor.debug", "_clear_sharding_prop_cache"),
                ("torch.distributed.tensor._redistribute", "clear_redistribute_planner_cache"),
                ("torch.distributed.tensor._redistribute", "_gen_transform_infos.cache_clear"),
                ("torch.distributed.tensor._collective_utils", "MeshTopoInfo.build_from_mesh.cache_clear")]


def forget_meshes() -> None:
    """Clear DTensor's caches, which hold every mesh they saw, and through it the process group, for the life of the
    process. Called once the group is destroyed: the group and its threads (gloo's work loops, its TCP loop, the
    store's server) then end with the run, not in the interpreter's shutdown, where a thread still alive aborted a
    rank whose run had finished ("terminate called without an active exception", SIGABRT). DTensor has no public
    call for this; where a torch lacks one of these caches, or has another, the group may outlive the run again,
    which ``tests/test_fsdp.py`` detects (no process-group thread outlives a sharded run)."""
    for module, name in _MESH_CACHES:
        try:
            clear = attrgetter(name)(import_module(module))
        except (ImportError, AttributeError):
            continue
        clear()
