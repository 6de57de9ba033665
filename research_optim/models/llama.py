"""LLaMA (Touvron et al. 2023): pre-RMSNorm decoder blocks with rotary position embeddings and a SwiGLU MLP.

Written natively (no download, no ``transformers``), with Hugging Face's parameter names
(``model.layers.N.self_attn.q_proj``, ``mlp.gate_proj``, ``lm_head``, ``score``, ...) and its rotary convention
(rotate-half), so the weights of a ``LlamaForCausalLM`` / ``LlamaForSequenceClassification`` folder load as they
are (``models/pretrained.py``). Initialisation as Hugging Face's: N(0, 0.02) for every matrix and embedding.
Presets (``conf/model/llama_*.yaml``) follow the GaLore/Cautious sizes; docs/models.md lists their counts.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from research_optim.data.base import DataSpec
from research_optim.models.transformer import (add_classifier, check_sizes, check_tokens, last_real_states,
                                               real_ids, text_task, train_flops_per_sequence)


def rotary_tables(head_dim: int, context: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos and sin, (context, head_dim): position p turns the pair (i, i + head_dim/2) by p·θ^(−2i/head_dim)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(context, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotary embedding of (batch, heads, seq, head_dim) queries or keys, rotate-half convention."""
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-second, first], dim=-1) * sin


class Attention(nn.Module):
    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.q_proj = nn.Linear(n_embd, n_embd, bias=False)
        self.k_proj = nn.Linear(n_embd, n_embd, bias=False)
        self.v_proj = nn.Linear(n_embd, n_embd, bias=False)
        self.o_proj = nn.Linear(n_embd, n_embd, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        batch, seq, width = x.shape
        heads = lambda t: t.view(batch, seq, self.n_head, width // self.n_head).transpose(1, 2)  # noqa: E731
        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        y = F.scaled_dot_product_attention(rotate(q, cos, sin), rotate(k, cos, sin), v, is_causal=True)
        return self.o_proj(y.transpose(1, 2).reshape(batch, seq, width))


class SwiGLU(nn.Module):
    """down(silu(gate(x)) · up(x)) (Shazeer 2020)."""

    def __init__(self, n_embd: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(n_embd, intermediate_size, bias=False)
        self.up_proj = nn.Linear(n_embd, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, n_embd, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, n_embd: int, n_head: int, intermediate_size: int, norm_eps: float) -> None:
        super().__init__()
        self.input_layernorm = nn.RMSNorm(n_embd, eps=norm_eps)
        self.self_attn = Attention(n_embd, n_head)
        self.post_attention_layernorm = nn.RMSNorm(n_embd, eps=norm_eps)
        self.mlp = SwiGLU(n_embd, intermediate_size)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    """Token embedding, decoder layers, final norm: hidden states (batch, seq, width)."""

    def __init__(self, vocab_size: int, n_layer: int, n_head: int, n_embd: int, intermediate_size: int,
                 norm_eps: float) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab_size, n_embd)
        self.layers = nn.ModuleList(DecoderLayer(n_embd, n_head, intermediate_size, norm_eps) for _ in range(n_layer))
        self.norm = nn.RMSNorm(n_embd, eps=norm_eps)


class Llama(nn.Module):
    """``model(tokens)`` with tokens (batch, seq ≤ context) → next-token logits (batch, seq, vocab) for ``lm``
    data, or class logits (batch, classes) read at each sequence's last real token for text classification."""

    def __init__(
        self,
        spec: DataSpec,
        n_layer: int = 8,
        n_head: int = 8,
        n_embd: int = 512,
        intermediate_size: int = 1376,
        rope_theta: float = 10000.0,
        norm_eps: float = 1e-6,
        tie_embeddings: bool = False,
    ) -> None:
        super().__init__()
        vocab_size, self.context = text_task(spec, "llama")
        check_sizes(n_layer=n_layer, n_head=n_head, n_embd=n_embd, intermediate_size=intermediate_size)
        if n_embd % n_head or (n_embd // n_head) % 2:
            raise ValueError(f"model.n_embd={n_embd} must divide into model.n_head={n_head} heads of even width "
                             "(rotary embeddings turn pairs)")
        self.n_layer, self.n_embd = n_layer, n_embd
        self.model = LlamaModel(vocab_size, n_layer, n_head, n_embd, intermediate_size, norm_eps)
        self.classify = add_classifier(self, spec, n_embd, bias=False)
        if not self.classify:
            self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
            if tie_embeddings:
                self.lm_head.weight = self.model.embed_tokens.weight
        cos, sin = rotary_tables(n_embd // n_head, self.context, rope_theta)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, tokens: Tensor) -> Tensor:
        check_tokens(tokens, self.context, "Llama")
        seq = tokens.shape[1]
        x = self.model.embed_tokens(real_ids(tokens) if self.classify else tokens)
        cos, sin = self.cos[:seq], self.sin[:seq]
        for layer in self.model.layers:
            x = layer(x, cos, sin)
        x = self.model.norm(x)
        return self.score(last_real_states(x, tokens)) if self.classify else self.lm_head(x)

    def train_flops_per_example(self) -> float:
        """Forward + backward FLOPs of one sequence of the data's length (``models/transformer.py``)."""
        head = self.score if self.classify else self.lm_head
        return train_flops_per_sequence(self.model.layers, head, self.classify, self.n_layer, self.n_embd,
                                        self.context)
