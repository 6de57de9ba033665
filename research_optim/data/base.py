"""What the training loop needs from a data set: a spec for the model, and deterministic, resumable batches."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Literal

import torch
from torch import Tensor

Task = Literal["classification", "lm"]


@dataclass(frozen=True)
class DataSpec:
    """Shape of the task, handed to the model builder so the model adapts to the data.

    ``input_shape`` is (features,) for vectors, (channels, height, width) for images, (seq_len,) for text.
    For ``lm`` tasks ``num_classes`` is the vocabulary size. ``optimum_loss`` is the best achievable
    per-token loss when it is known (a synthetic language's entropy rate), else None.
    """

    task: Task
    input_shape: tuple[int, ...]
    num_classes: int
    optimum_loss: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """'vector', 'image' or 'text' — what kind of model input this is."""
        if self.task == "lm":
            return "text"
        return "image" if len(self.input_shape) == 3 else "vector"


class TensorDataset:
    """In-memory (inputs, targets) split with deterministic shuffling, sharding and resumable iteration.

    Epoch ``e`` uses the permutation drawn from ``seed + e``; the batch at global step ``s`` is a pure function
    of (seed, batch_size, world_size, rank, s), so resuming at step ``s`` needs nothing but ``s``. Ranks take
    disjoint, strided slices of each global batch (no duplication across ranks).
    """

    def __init__(self, inputs: Tensor, targets: Tensor) -> None:
        if len(inputs) != len(targets):
            raise ValueError(f"inputs ({len(inputs)}) and targets ({len(targets)}) differ in length")
        self.inputs, self.targets = inputs, targets

    def __len__(self) -> int:
        return len(self.inputs)

    def train_batches(
        self, batch_size: int, seed: int, start_step: int = 0, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Endless per-rank batches of ``batch_size`` (global batch = batch_size * world_size), from ``start_step``."""
        global_batch = batch_size * world_size
        per_epoch = len(self) // global_batch
        if per_epoch == 0:
            raise ValueError(f"data has {len(self)} examples, fewer than one global batch of {global_batch}")
        step, perm_epoch, perm = start_step, None, None
        while True:
            epoch, offset = divmod(step, per_epoch)
            if epoch != perm_epoch:  # one permutation per epoch, drawn from seed + epoch alone
                perm_epoch = epoch
                perm = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed + epoch))
            lo = offset * global_batch
            idx = perm[lo : lo + global_batch][rank::world_size]
            yield self.inputs[idx], self.targets[idx]
            step += 1

    def eval_batches(self, batch_size: int, rank: int = 0, world_size: int = 1) -> Iterator[tuple[Tensor, Tensor]]:
        """The whole split once, in order, each example on exactly one rank."""
        idx_all = torch.arange(len(self))[rank::world_size]
        for lo in range(0, len(idx_all), batch_size):
            idx = idx_all[lo : lo + batch_size]
            yield self.inputs[idx], self.targets[idx]


@dataclass
class Dataset:
    """A built data set: its spec and the train/val splits."""

    spec: DataSpec
    train: TensorDataset
    val: TensorDataset
    name: str = ""
