"""Checks every causal language model passes: its attention is causal, and it learns a deterministic sequence."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def assert_causal(model: nn.Module, vocab: int = 50, seq: int = 16) -> None:
    """Changing tokens from position 10 on changes no logits before it, and changes those after."""
    model.eval()
    tokens = torch.randint(0, vocab, (1, seq))
    changed = tokens.clone()
    changed[0, 10:] = (changed[0, 10:] + 1) % vocab
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    torch.testing.assert_close(a[0, :10], b[0, :10])
    assert not torch.allclose(a[0, 10:], b[0, 10:])


def assert_learns_a_sequence(model: nn.Module, vocab: int = 50, seq: int = 16) -> None:
    """60 AdamW steps on one repeated sequence bring the next-token loss below 0.5."""
    model.train()
    tokens = torch.arange(seq + 1).remainder(vocab).unsqueeze(0).repeat(4, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = F.cross_entropy(model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5
