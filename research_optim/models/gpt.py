"""A small GPT-style causal language model (Radford et al. 2019 layout, as in nanoGPT).

Token + learned position embeddings, ``n_layer`` pre-LayerNorm blocks of causal self-attention and a GELU MLP,
a final LayerNorm and an output head tied to the token embedding. Vocabulary and context length come from the
data's :class:`DataSpec` (``num_classes`` and ``input_shape[0]``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from research_optim.data.base import DataSpec


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
    """``model(tokens)`` with tokens (batch, seq ≤ context) → logits (batch, seq, vocab)."""

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
        if spec.task != "lm":
            raise ValueError(f"model=gpt needs text (lm) data, got data of kind {spec.kind!r}")
        for name, value in (("n_layer", n_layer), ("n_head", n_head), ("n_embd", n_embd)):
            if value < 1:
                raise ValueError(f"model.{name} must be ≥ 1, got {value}")
        if n_embd % n_head:
            raise ValueError(f"model.n_embd={n_embd} must be divisible by model.n_head={n_head}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {dropout}")
        self.context = spec.input_shape[0]
        self.tok_emb = nn.Embedding(spec.num_classes, n_embd)
        self.pos_emb = nn.Embedding(self.context, n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout, bias) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, bias=bias)
        self.head = nn.Linear(n_embd, spec.num_classes, bias=False)
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

    def train_flops_per_example(self) -> float:
        """Forward + backward FLOPs of one training sequence of the full context T (PaLM's appendix B, as nanoGPT):
        6·N·T for the matrix multiplications by the N weights of the matrices (the tied head counted once; the
        position embedding, a lookup, not at all) and 12·L·d·T² for attention's scores and weighted sums over the
        whole T×T square (the causal half is not discounted). Equal to torch's FLOP counter (tests)."""
        matrices = sum(p.numel() for p in self.parameters() if p.ndim == 2) - self.pos_emb.weight.numel()
        tokens, width = self.context, self.tok_emb.embedding_dim
        return 6.0 * matrices * tokens + 12.0 * len(self.blocks) * width * tokens**2

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.dim() != 2:
            raise ValueError(f"GPT expects token ids of shape (batch, seq), got {tuple(tokens.shape)}")
        seq = tokens.shape[1]
        if seq > self.context:
            raise ValueError(f"sequence length {seq} exceeds the model's context {self.context}")
        positions = torch.arange(seq, device=tokens.device)
        x = self.drop(self.tok_emb(tokens) + self.pos_emb(positions))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))
