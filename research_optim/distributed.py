"""Where am I running? One function detects the environment: torchrun → SLURM → a single process.

The same training entry runs everywhere; only these variables differ. SLURM tasks started by ``srun`` (one task
per GPU/process) read SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID and rendezvous at the first node of the job.
"""
from __future__ import annotations

import gc
import os
import socket
import subprocess
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.distributed as dist

from research_optim.errors import UserError


@dataclass(frozen=True)
class Env:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launcher: str = "single"          # single | torchrun | slurm
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def slurm_rendezvous() -> tuple[str, int]:
    """Where the ranks of a SLURM job meet: its first node, on a port derived from the job id (jobs sharing a
    host do not collide)."""
    nodelist = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST", "127.0.0.1")
    port = 20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
        return out.stdout.split()[0], port
    except (OSError, subprocess.CalledProcessError, IndexError):
        return nodelist.split(",")[0], port


def detect(device: str = "auto") -> Env:
    """Read the launcher's variables (without initialising anything)."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
        launcher = "torchrun"
    elif int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ:
        rank, world = int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"])
        local, launcher = int(os.environ.get("SLURM_LOCALID", "0")), "slurm"
    else:
        rank, world, local, launcher = 0, 1, 0, "single"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError(f"train.device=cuda, but no CUDA device is visible to this process on "
                        f"{socket.gethostname()}; run it where a GPU is allotted, or set train.device=cpu (a new run)")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    visible = torch.cuda.device_count() if use_cuda else 0
    if visible > 1 and local >= visible:  # one GPU per rank (visible == 1: SLURM bound one GPU to each task)
        raise UserError(f"local rank {local} on {socket.gethostname()} has no GPU of its own: this process sees "
                        f"{visible} GPUs; start one rank per GPU (cluster.tasks_per_node or cluster.nproc_per_node "
                        "= cluster.gpus_per_node)")
    dev = torch.device("cuda", local % visible) if use_cuda else torch.device("cpu")
    return Env(rank, world, local, launcher, dev)


def setup(device: str = "auto") -> Env:
    """Detect the environment and join the process group when there is more than one process."""
    env = detect(device)
    if env.distributed and not dist.is_initialized():
        if env.launcher == "slurm":
            host, port = slurm_rendezvous()
            os.environ.setdefault("MASTER_ADDR", host)
            os.environ.setdefault("MASTER_PORT", str(port))
            os.environ.setdefault("RANK", str(env.rank))
            os.environ.setdefault("WORLD_SIZE", str(env.world_size))
        if env.device.type == "cuda":
            torch.cuda.set_device(env.device)
        dist.init_process_group("nccl" if env.device.type == "cuda" else "gloo", rank=env.rank,
                                world_size=env.world_size)
    return env


def teardown() -> None:
    """Leave the process group, and free it now with its threads: DTensor's caches hold it otherwise
    (``fsdp.forget_meshes``)."""
    if not dist.is_initialized():
        return
    dist.destroy_process_group()
    from research_optim import fsdp

    fsdp.forget_meshes()
    gc.collect()  # a sharded model is a cycle that holds its mesh


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def gather_float(value: float, device: torch.device) -> list[float]:
    """``value`` of every rank, in rank order (one collective); ``[value]`` in a single process."""
    if not dist.is_initialized():
        return [value]
    mine = torch.tensor([value], dtype=torch.float64, device=device)
    every = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(every, mine)
    return [t.item() for t in every]


CHECKSUM_PRIME = 2**31 - 1  # > any difference of two 16-bit words, and small enough that no sum overflows int64


def bit_checksums(tensors: Sequence[torch.Tensor], chunk: int = 1 << 21) -> torch.Tensor:
    """Two exact checksums of each tensor's bits (an int64 tensor of shape ``(len(tensors), 2)``).

    The tensor's memory is read as 16-bit words v_i; the checksums are Σ v_i and Σ (i+1)·v_i, both mod the prime
    ``CHECKSUM_PRIME``. Changing one word changes both (a word changes by less than the prime); swapping two words
    changes the second; any other change goes unseen with a chance of about 2^-62. Computed ``chunk`` words at a
    time: the memory needed stays a few chunks, whatever the model's size.
    """
    sums = torch.zeros(len(tensors), 2, dtype=torch.int64, device=tensors[0].device if tensors else "cpu")
    for k, tensor in enumerate(tensors):
        flat = tensor.detach().contiguous().reshape(-1)
        words = flat.view(torch.int16 if flat.element_size() > 1 else torch.uint8)  # float8: bytes
        for start in range(0, words.numel(), chunk):
            part = words[start:start + chunk].long()
            position = torch.arange(start + 1, start + 1 + part.numel(), device=part.device) % CHECKSUM_PRIME
            sums[k, 0] += part.sum()
            sums[k, 1] += (part * position % CHECKSUM_PRIME).sum()
            sums[k] %= CHECKSUM_PRIME
    return sums


def differing_replicas(named: Sequence[tuple[str, torch.Tensor]]) -> list[str]:
    """The names of the tensors whose bits differ between ranks (none: the replicas are identical), found by
    comparing :func:`bit_checksums` (two collectives: their elementwise max and min over the ranks)."""
    sums = bit_checksums([tensor for _, tensor in named])
    if not dist.is_initialized():
        return []
    high, low = sums.clone(), sums.clone()
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    return [name for (name, _), same in zip(named, (high == low).all(dim=1).tolist()) if not same]


def to_device(batch: tuple[torch.Tensor, ...], device: torch.device) -> tuple[torch.Tensor, ...]:
    """A batch on ``device``; on CUDA through pinned host memory with non-blocking copies, so the host goes on
    queueing work while the batch travels."""
    if device.type == "cuda":
        batch = tuple(t.pin_memory() for t in batch)
    return tuple(t.to(device, non_blocking=True) for t in batch)
