"""What the training loop needs from a data set: a spec for the model, and deterministic, resumable batches."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Literal

import torch
from torch import Tensor

Task = Literal["classification", "lm"]

PAD_ID = -1  # pads token inputs of sequence classification on the right; never a vocabulary id


@dataclass(frozen=True)
class DataSpec:
    """Shape of the task, handed to the model builder so the model adapts to the data.

    ``input_shape`` is (features,) for vectors, (channels, height, width) for images, (seq_len,) for text.
    ``vocab_size`` is set for text (token ids); for ``lm`` tasks ``num_classes`` is the vocabulary size too.
    ``optimum_loss`` is the best achievable per-token loss when it is known (a synthetic language's entropy
    rate), else None.
    """

    task: Task
    input_shape: tuple[int, ...]
    num_classes: int
    optimum_loss: float | None = None
    extra: dict = field(default_factory=dict)
    vocab_size: int | None = None

    def __post_init__(self) -> None:
        if self.task == "lm" and self.vocab_size is None:  # an LM predicts its own vocabulary
            object.__setattr__(self, "vocab_size", self.num_classes)

    @property
    def kind(self) -> str:
        """'vector', 'image' or 'text' — what kind of model input this is."""
        if self.task == "lm" or self.vocab_size is not None:
            return "text"
        return "image" if len(self.input_shape) == 3 else "vector"


def rank_slice(batch_size: int, rank: int, world_size: int) -> slice:
    """Rank ``rank``'s part of a global batch of ``batch_size`` examples: equal, contiguous, disjoint parts.

    The one place a global batch (``train.batch_size``) is split over ranks, so N ranks see together exactly the
    batch one process would; the config check refuses a batch that does not divide before anything starts.
    """
    per_rank, rest = divmod(batch_size, world_size)
    if rest or per_rank == 0:
        raise ValueError(f"train.batch_size={batch_size} does not split evenly over {world_size} processes")
    return slice(rank * per_rank, (rank + 1) * per_rank)


def micro_slices(per_rank: int, micro_batch_size: int | None) -> list[slice]:
    """The micro-batches of a rank's batch of ``per_rank`` examples (``train.micro_batch_size``; None: one, the
    whole batch): equal, contiguous, disjoint parts, in order.

    The one place a rank's batch is split into micro-batches; equal sizes make the mean of the micro-batch means
    the batch mean. The config check refuses a size that does not divide before anything starts.
    """
    size = micro_batch_size or per_rank
    count, rest = divmod(per_rank, size)
    if rest or count == 0:
        raise ValueError(f"train.micro_batch_size={micro_batch_size} does not divide the per-rank batch of {per_rank}")
    return [slice(i * size, (i + 1) * size) for i in range(count)]


def epoch_batches(size: int, batch_size: int, seed: int, start_step: int = 0) -> Iterator[Tensor]:
    """The example indices of each global batch from ``start_step`` on, endlessly: epoch ``e`` walks the
    permutation drawn from ``seed + e`` alone, so the batch of step ``s`` is a pure function of (seed, size,
    batch_size, s) and a run resumes at any step."""
    per_epoch = size // batch_size
    if per_epoch == 0:
        raise ValueError(f"data has {size} examples, fewer than one batch of train.batch_size={batch_size}")
    step, perm_epoch, perm = start_step, None, None
    while True:
        epoch, offset = divmod(step, per_epoch)
        if epoch != perm_epoch:  # one permutation per epoch
            perm_epoch = epoch
            perm = torch.randperm(size, generator=torch.Generator().manual_seed(seed + epoch))
        yield perm[offset * batch_size : (offset + 1) * batch_size]
        step += 1


class TensorDataset:
    """In-memory (inputs, targets) split with deterministic shuffling, sharding and resumable iteration.

    Epoch ``e`` uses the permutation drawn from ``seed + e``; the global batch at step ``s`` is a pure function of
    (seed, batch_size, s), so resuming at step ``s`` needs nothing but ``s``, and every rank takes its
    :func:`rank_slice` of the same global batch.
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
        """Endless batches from ``start_step`` on: this rank's part of each global batch of ``batch_size``."""
        part = rank_slice(batch_size, rank, world_size)
        for idx in epoch_batches(len(self), batch_size, seed, start_step):
            yield self.inputs[idx[part]], self.targets[idx[part]]

    def eval_batches(self, batch_size: int, rank: int = 0, world_size: int = 1,
                     limit: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """The split's first ``limit`` examples (None: all) once, in order, example i on rank i mod world_size;
        ``batch_size`` examples per forward pass on each rank."""
        idx_all = torch.arange(min(len(self), limit if limit is not None else len(self)))[rank::world_size]
        for lo in range(0, len(idx_all), batch_size):
            idx = idx_all[lo : lo + batch_size]
            yield self.inputs[idx], self.targets[idx]


@dataclass
class Dataset:
    """A built data set: its spec, the train/val splits, and a test split when the source has one.

    Validation is held out from the training data and is what tuning selects on; the test split is evaluated
    once, at the end of a run, and reported separately — never used for selection.
    """

    spec: DataSpec
    train: TensorDataset
    val: TensorDataset
    name: str = ""
    test: TensorDataset | None = None
