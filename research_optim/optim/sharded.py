"""Sharded parameters (``DTensor``, as FSDP2's ``fully_shard`` holds them): what an optimizer needs beyond DTensor.

DTensor's own arithmetic already makes the per-tensor reductions of every rule whole-tensor ones — a ``sum``,
``mean`` or ``norm`` of a sharded tensor is a partial result that DTensor all-reduces when it is used — so the
masked-fraction counts, SaLSA's and SLS's slopes and norms and Schedule-Free's weights need nothing here. Five
things do:

* arithmetic that must round once, on the whole reduction (the cautious mask's count divided by numel): DTensor
  would run it on each rank's partial value before summing; :func:`replicated` all-reduces first;
* a multi-tensor op DTensor has no rule for (``_foreach_copy_``): elementwise, so it runs on the shards (:func:`local`);
* a flattening DTensor refuses (an unevenly sharded tensor): :func:`inner`;
* a value leaving the DTensor world (a scalar handed to a plain collective, a Python float): :func:`whole`;
* an operation on whole matrices (Muon's Newton–Schulz iteration, Adafactor's row and column statistics): gather
  with :func:`whole`, compute, and take this rank's shard back with :func:`shard_like` — every rank computes the
  same whole result from the same input.

A Python number read from a DTensor reduction goes through :func:`whole` too: ``.item()`` of a norm's partial
result is only this rank's part.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["is_sharded", "local", "whole", "replicated", "inner", "shard_like"]

try:
    from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor
except ImportError:  # a torch built without torch.distributed: nothing can be sharded
    DTensor = None


def is_sharded(t: Tensor) -> bool:
    return DTensor is not None and isinstance(t, DTensor)


def local(tensors: list[Tensor]) -> list[Tensor]:
    """This rank's shards of ``tensors`` (views: writing them writes the DTensors); plain tensors as they are."""
    return [t.to_local() if is_sharded(t) else t for t in tensors]


def whole(t: Tensor) -> Tensor:
    """``t`` as one plain tensor, the same on every rank (gathered or all-reduced when ``t`` is a DTensor)."""
    return t.full_tensor() if is_sharded(t) else t


def replicated(t: Tensor) -> Tensor:
    """A DTensor reduction's partial result all-reduced now (every placement ``Replicate``), still a DTensor; plain
    tensors as they are. Arithmetic on a ``Partial`` DTensor runs on each rank's part and the rounded parts are summed
    later (a count divided by ``numel`` then differs from one division in the last bit); on the replicated value it
    rounds once, as on one device."""
    if not is_sharded(t):
        return t
    return t.redistribute(placements=[Replicate()] * len(t.placements))


def inner(a: Tensor, b: Tensor) -> Tensor:
    """⟨a, b⟩ as ``torch.inner`` of the flattened tensors (DTensor cannot flatten an unevenly sharded one: each rank
    takes the inner product of its shards, and the partial sums are all-reduced)."""
    if not is_sharded(a):
        return torch.inner(a.flatten(), b.flatten())
    partial = torch.inner(a.to_local().flatten(), b.to_local().flatten())
    placements = [Partial() if isinstance(p, Shard) else Replicate() for p in a.placements]
    return DTensor.from_local(partial, a.device_mesh, placements).full_tensor()


def shard_like(full: Tensor, like: Tensor) -> Tensor:
    """This rank's part of ``full`` (the same on every rank), laid out as the DTensor ``like`` (no communication);
    ``full`` itself when ``like`` is a plain tensor."""
    if not is_sharded(like):
        return full
    return distribute_tensor(full, like.device_mesh, like.placements, src_data_rank=None)

