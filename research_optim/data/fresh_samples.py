"""An endless training stream of fresh samples from a known process: no example is ever seen twice.

On such a stream the training loss of a batch is an unbiased estimate of the population loss at the current
parameters (nothing can be learned by heart), so a training curve measures optimisation, not memorisation.
The global batch of step ``s`` is drawn from a generator seeded by (stream seed, run seed, ``s``) alone: a resume
at step ``s`` needs nothing but ``s``, and every rank draws the same global batch and keeps its
:func:`~research_optim.data.base.rank_slice` — N ranks train on exactly the examples one process would.
"""
from __future__ import annotations

import hashlib
from typing import Callable, Iterator

import torch
from torch import Tensor

from research_optim.data.base import TensorDataset, rank_slice

# draw(n, generator) -> (inputs, targets) of n fresh examples
Draw = Callable[[int, torch.Generator], tuple[Tensor, Tensor]]


def generator(*parts: object) -> torch.Generator:
    """A torch generator seeded by a hash of ``parts``: distinct parts give independent streams."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)


def fixed_split(draw: Draw, size: int, *seed_parts: object) -> TensorDataset:
    """``size`` examples drawn once (a validation or test split), from their own generator."""
    return TensorDataset(*draw(size, generator(*seed_parts)))


class FreshSamples:
    """The training split of a sampled task: every step draws a new global batch from ``draw``."""

    def __init__(self, draw: Draw, stream_seed: object) -> None:
        self.draw, self.stream_seed = draw, stream_seed

    def train_batches(self, batch_size: int, seed: int, start_step: int = 0, rank: int = 0,
                      world_size: int = 1) -> Iterator[tuple[Tensor, Tensor]]:
        """This rank's part of each fresh global batch of ``batch_size``, from ``start_step`` on."""
        part = rank_slice(batch_size, rank, world_size)
        step = start_step
        while True:
            inputs, targets = self.draw(batch_size, generator(self.stream_seed, "train", seed, step))
            yield inputs[part], targets[part]
            step += 1

    def eval_batches(self, batch_size: int, rank: int = 0, world_size: int = 1,
                     limit: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """The loop's "train" evaluation: ``limit`` fresh examples of the training distribution, always the same."""
        if limit is None:
            raise ValueError("a fresh-sample stream is endless: its evaluation needs a limit")
        yield from fixed_split(self.draw, limit, self.stream_seed, "train-eval").eval_batches(
            batch_size, rank, world_size)
