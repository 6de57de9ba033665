"""The small GPT: shapes, causality, weight tying, learning, and refusal of non-text data."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.models.lm_checks import assert_causal, assert_learns_a_sequence
from research_optim.data.base import DataSpec
from research_optim.models.gpt import GPT

TEXT = DataSpec(task="lm", input_shape=(16,), num_classes=50)


def tiny_gpt(**overrides) -> GPT:
    torch.manual_seed(0)
    return GPT(TEXT, **{"n_layer": 2, "n_head": 2, "n_embd": 32, **overrides})


def test_forward_backward_shapes_and_tied_weights():
    model = tiny_gpt(dropout=0.1)
    tokens = torch.randint(0, 50, (3, 16))
    logits = model(tokens)
    assert logits.shape == (3, 16, 50)
    F.cross_entropy(logits.flatten(0, 1), tokens.roll(-1, 1).flatten()).backward()
    assert model.head.weight is model.tok_emb.weight
    assert all(p.grad is not None for p in model.parameters())


def test_initial_loss_is_near_uniform():
    """Small N(0, 0.02) init: predictions start close to uniform (loss ≈ ln V)."""
    model = tiny_gpt().eval()
    tokens, targets = torch.randint(0, 50, (2, 8, 16))
    loss = F.cross_entropy(model(tokens).flatten(0, 1), targets.flatten())
    assert abs(loss.item() - torch.log(torch.tensor(50.0)).item()) < 0.1


def test_attention_is_causal():
    assert_causal(tiny_gpt())


def test_learns_a_deterministic_sequence():
    assert_learns_a_sequence(tiny_gpt())


def test_refuses_image_data():
    with pytest.raises(ValueError, match="model=gpt needs text data \\(token ids\\), got data of kind 'image'"):
        GPT(DataSpec(task="classification", input_shape=(1, 8, 8), num_classes=10))


def test_rejects_width_not_divisible_by_heads_and_too_long_input():
    with pytest.raises(ValueError, match="model.n_embd=30 must be divisible by model.n_head=4"):
        GPT(TEXT, n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="exceeds the model's context 16"):
        tiny_gpt()(torch.zeros(1, 17, dtype=torch.long))
