"""What the decoder-only transformers (GPT, LLaMA) share: reading a text class off a sequence, and training FLOPs.

A text model serves two tasks from the data's :class:`DataSpec`: ``lm`` (next-token logits at every position)
and ``classification`` of a token sequence (GLUE-style), whose sequences are right-padded with ``PAD_ID``.
Causal attention keeps the padding out of the real tokens, and the class is read at the last real token, which
has seen the whole sequence (as Hugging Face's ``*ForSequenceClassification`` do).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from research_optim.data.base import PAD_ID, DataSpec


def text_task(spec: DataSpec, model_name: str) -> tuple[int, int]:
    """(vocabulary size, context length) of text data, or a ValueError naming the model and the data's kind."""
    if spec.kind != "text":
        raise ValueError(f"model={model_name} needs text data (token ids), got data of kind {spec.kind!r}")
    return spec.vocab_size, spec.input_shape[0]


def check_sizes(**sizes: int) -> None:
    """Refuse a size below 1, naming its ``model.`` key."""
    for name, value in sizes.items():
        if value < 1:
            raise ValueError(f"model.{name} must be ≥ 1, got {value}")


def check_tokens(tokens: Tensor, context: int, model_name: str) -> None:
    """Refuse input that is not (batch, seq ≤ context) token ids."""
    if tokens.dim() != 2:
        raise ValueError(f"{model_name} expects token ids of shape (batch, seq), got {tuple(tokens.shape)}")
    if tokens.shape[1] > context:
        raise ValueError(f"sequence length {tokens.shape[1]} exceeds the model's context {context}")


def add_classifier(model: nn.Module, spec: DataSpec, width: int, bias: bool) -> bool:
    """On classification data, give ``model`` its linear ``score`` head (named ``classifier_name``: replaced
    when fine-tuning pretrained weights, ``models/pretrained.py``); returns whether it did."""
    if spec.task != "classification":
        return False
    model.classifier_name = "score"
    model.score = nn.Linear(width, spec.num_classes, bias=bias)
    return True


def real_ids(tokens: Tensor) -> Tensor:
    """Token ids with padding replaced by id 0 (what the embedding reads there; causal attention hides it)."""
    return tokens.clamp(min=0)


def last_real_states(hidden: Tensor, tokens: Tensor) -> Tensor:
    """(batch, width): each sequence's hidden state at its last real (non-padding) token."""
    last = (tokens != PAD_ID).sum(1).sub(1).clamp(min=0)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def linear_weights(*modules: nn.Module) -> int:
    """Elements of the weight matrices of every ``nn.Linear`` in ``modules`` (each counted once if shared)."""
    seen = {id(m.weight): m.weight.numel() for module in modules for m in module.modules() if isinstance(m, nn.Linear)}
    return sum(seen.values())


def train_flops_per_sequence(layers: nn.Module, head: nn.Module, classify: bool, n_layer: int, width: int,
                             seq_len: int) -> float:
    """Forward + backward FLOPs of one sequence of ``seq_len`` tokens through ``layers`` and ``head``.

    A weight costs 2 FLOPs per token it multiplies forward and 4 backward: 6·N·T for the matrices applied at
    every token (the layers, and an LM's head), 6·N for a classification head applied once per sequence.
    Attention's scores and weighted sums cost 12·L·T²·d (PaLM's MFU count, Chowdhery et al. 2022, app. B: the
    full T×T, although a causal mask needs half). Norms, activations and the softmax are left out, as there.
    """
    per_token = linear_weights(layers) + (0 if classify else linear_weights(head))
    per_sequence = linear_weights(head) if classify else 0
    return 6.0 * (per_token * seq_len + per_sequence) + 12.0 * n_layer * seq_len**2 * width
