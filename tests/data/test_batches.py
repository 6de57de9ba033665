"""In-memory batches: `train.batch_size` is the global batch, and ranks take equal, disjoint slices of it."""
from __future__ import annotations

import pytest
import torch

from research_optim.data.base import TensorDataset


def test_ranks_together_see_exactly_the_batch_of_one_process():
    data = TensorDataset(torch.arange(100).float().unsqueeze(1), torch.arange(100))
    alone = [y for _, (_, y) in zip(range(30), data.train_batches(8, seed=1))]  # 12 steps per epoch: 2.5 epochs
    for world in (2, 4):
        ranks = [[y for _, (_, y) in zip(range(30), data.train_batches(8, seed=1, rank=r, world_size=world))]
                 for r in range(world)]
        for step, batch in enumerate(alone):
            assert torch.equal(torch.cat([ranks[r][step] for r in range(world)]), batch)
    resumed = [y for _, (_, y) in zip(range(10), data.train_batches(8, seed=1, start_step=20, rank=1, world_size=2))]
    assert all(torch.equal(a, b[4:]) for a, b in zip(resumed, alone[20:]))


def test_a_batch_the_ranks_cannot_split_evenly_is_refused():
    data = TensorDataset(torch.zeros(100, 1), torch.zeros(100))
    with pytest.raises(ValueError, match="train.batch_size=6 does not split evenly over 4 processes"):
        next(data.train_batches(6, seed=0, world_size=4))


def test_eval_limit_takes_the_same_first_examples_on_any_number_of_ranks():
    data = TensorDataset(torch.zeros(50, 1), torch.arange(50))
    alone = torch.cat([y for _, y in data.eval_batches(4, limit=13)])
    split = torch.cat([y for r in range(3) for _, y in data.eval_batches(4, rank=r, world_size=3, limit=13)])
    assert alone.tolist() == list(range(13)) and sorted(split.tolist()) == alone.tolist()
