"""A small GPT-style causal language model (Radford et al. 2019 layout, as in nanoGPT).

Token + learned position embeddings, ``n_layer`` pre-LayerNorm blocks of causal self-attention and a GELU MLP,
a final LayerNorm and an output head tied to the token embedding. Vocabulary and context length come from the
data's :class:`DataSpec` (``vocab_size`` and ``input_shape[0]``); on text classification data the head is a
linear classifier read at each sequence's last real token (``models/transformer.py``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from research_optim.data.base import DataSpec
from research_optim.models.transformer import (add_classifier, check_sizes, check_tokens, last_real_states, real_ids,
                                               text_task, train_flops_per_sequence)


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool) -> None:
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        batch, seq, width = x.shape
        # (batch, seq, 3·width) → three (batch, heads, seq, head_dim) tensors
        q, k, v = self.qkv(x).view(batch, seq, 3, self.n_head, width // self.n_head).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(batch, seq, width)))


class Block(nn.Module):
    """x + attn(LN(x)), then x + mlp(LN(x)): pre-LN keeps the residual stream un-normalised and training stable."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd, bias=bias),
            nn.GELU(),
            nn.Linear(4 * n_embd, n_embd, bias=bias),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """``model(tokens)`` with tokens (batch, seq ≤ context) → logits (batch, seq, vocab), or (batch, classes) for
    text classification."""

    def __init__(
        self,
        spec: DataSpec,
        n_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 256,
        dropout: float = 0.0,
        bias: bool = False,
    ) -> None:
        super().__init__()
        vocab_size, self.context = text_task(spec, "gpt")
        check_sizes(n_layer=n_layer, n_head=n_head, n_embd=n_embd)
        if n_embd % n_head:
            raise ValueError(f"model.n_embd={n_embd} must be divisible by model.n_head={n_head}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {dropout}")
        self.n_layer, self.n_embd = n_layer, n_embd
        self.tok_emb = nn.Embedding(vocab_size, n_embd)
        self.pos_emb = nn.Embedding(self.context, n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout, bias) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, bias=bias)
        self.classify = add_classifier(self, spec, n_embd, bias)
        if not self.classify:
            self.head = nn.Linear(n_embd, vocab_size, bias=False)
            # Weight tying (Press & Wolf 2017): the output projection is the token embedding.
            self.head.weight = self.tok_emb.weight
        self._init_weights(n_layer)

    def _init_weights(self, n_layer: int) -> None:
        """N(0, 0.02) everywhere (GPT-2); residual output projections scaled by 1/√(2·n_layer) so the residual
        stream's variance does not grow with depth."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            for projection in (block.attn.proj, block.mlp[2]):
                nn.init.normal_(projection.weight, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    def forward(self, tokens: Tensor) -> Tensor:
        check_tokens(tokens, self.context, "GPT")
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.drop(self.tok_emb(real_ids(tokens) if self.classify else tokens) + self.pos_emb(positions))
        for block in self.blocks:
            x = block(x)
        x = self.ln_f(x)
        return self.score(last_real_states(x, tokens)) if self.classify else self.head(x)

    def train_flops_per_example(self) -> float:
        """Forward + backward FLOPs of one sequence of the data's length (``models/transformer.py``)."""
        head = self.score if self.classify else self.head
        return train_flops_per_sequence(self.blocks, head, self.classify, self.n_layer, self.n_embd, self.context)
