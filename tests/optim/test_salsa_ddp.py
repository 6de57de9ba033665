"""SaLSA under DDP (2 CPU processes, gloo): different data per rank, identical parameters and η on both ranks."""
from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch import nn

from tests.conftest import on_gloo_ranks

pytestmark = pytest.mark.slow  # two processes

STEPS = 25


def _worker(rank: int) -> dict:
    from research_optim.optim.salsa import SaLSA

    torch.manual_seed(0)  # same initial model on every rank
    model = nn.parallel.DistributedDataParallel(
        nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Dropout(0.1), nn.Linear(16, 1)))
    opt = SaLSA(model.parameters())
    gen = torch.Generator().manual_seed(100 + rank)  # different data on every rank
    torch.manual_seed(1000 + rank)                   # and different dropout masks
    local_losses, step_sizes = [], []
    for _ in range(STEPS):
        x = torch.randn(16, 4, generator=gen)
        y = (x.sum(1, keepdim=True) * (1 + rank)).sin()

        def closure(backwards: bool = False, x=x, y=y) -> torch.Tensor:
            if not backwards:
                with torch.no_grad():
                    return nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            return loss.detach()

        local_losses.append(float(opt.step(closure)))
        step_sizes.append(opt.step_size)
    return {"params": [p.detach().clone() for p in model.parameters()], "step_sizes": step_sizes,
            "losses": local_losses, "diagnostics": opt.diagnostics()}


@pytest.mark.timeout(120)
def test_ranks_stay_identical_under_ddp():
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    results = on_gloo_ranks(_worker)
    r0, r1 = results[0], results[1]
    assert r0["losses"] != r1["losses"]  # the ranks really saw different data: without the all-reduce they'd differ
    assert r0["step_sizes"] == r1["step_sizes"]
    assert len(set(r0["step_sizes"])) > 3  # η moved (the search ran and decided something)
    for a, b in zip(r0["params"], r1["params"]):
        assert torch.equal(a, b)
