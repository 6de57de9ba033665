"""A synthetic language with a known entropy rate: a random order-k Markov chain over a small vocabulary.

Each of the V^k contexts (the last k tokens) gets a next-token distribution drawn from a symmetric
Dirichlet(alpha) — small alpha gives peaked, low-entropy rows. Every sequence starts from the chain's stationary
distribution, so the best achievable cross-entropy is known exactly and the training loop can report the gap.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from research_optim.data.base import DataSpec, Dataset, TensorDataset


def _entropy(probs: Tensor) -> Tensor:
    """Shannon entropy in nats along the last dimension (0·log 0 = 0)."""
    return -torch.special.xlogy(probs, probs).sum(-1)


class MarkovLanguage:
    """An order-``order`` Markov chain over ``vocab_size`` tokens with Dirichlet(``alpha``) transition rows.

    Context ``c`` encodes the last ``order`` tokens oldest first, c = Σ_i a_i · V^(k-1-i); appending token b
    moves to context (c·V mod V^k) + b. ``transition[c, b]`` = P(next = b | context c).
    """

    def __init__(self, vocab_size: int = 32, order: int = 2, alpha: float = 0.1, seed: int = 0) -> None:
        if vocab_size < 2:
            raise ValueError(f"data.vocab_size must be ≥ 2, got {vocab_size}")
        if order < 1:
            raise ValueError(f"data.order must be ≥ 1, got {order}")
        if alpha <= 0:
            raise ValueError(f"data.alpha must be > 0, got {alpha}")
        if vocab_size**order > 2**20:
            raise ValueError(f"data.vocab_size**data.order = {vocab_size**order} contexts is too many (max 2**20)")
        self.vocab_size, self.order = vocab_size, order
        self.num_contexts = vocab_size**order
        rows = np.random.default_rng(seed).dirichlet(np.full(vocab_size, alpha), size=self.num_contexts)
        self.transition = torch.from_numpy(rows)  # float64, (contexts, vocab)
        # next_context[c, b]: the context after emitting b from context c
        shifted = (torch.arange(self.num_contexts) * vocab_size) % self.num_contexts
        self.next_context = shifted[:, None] + torch.arange(vocab_size)
        self.stationary = self._stationary_distribution()

    def _stationary_distribution(self, tol: float = 1e-14, max_iter: int = 200_000) -> Tensor:
        """π over contexts with π = πT, by lazy power iteration (lazy so a periodic chain still converges)."""
        pi = torch.full((self.num_contexts,), 1.0 / self.num_contexts, dtype=torch.float64)
        flat_next = self.next_context.flatten()
        for _ in range(max_iter):
            stepped = torch.zeros_like(pi).index_add_(0, flat_next, (pi[:, None] * self.transition).flatten())
            updated = 0.5 * (pi + stepped)
            if (updated - pi).abs().sum() < tol:
                return updated / updated.sum()
            pi = updated
        raise RuntimeError(f"stationary distribution did not converge in {max_iter} iterations; raise data.alpha")

    @property
    def entropy_rate(self) -> float:
        """H = Σ_c π(c) · H(T[c, :]) nats per token: the loss of the ideal predictor once it sees k tokens."""
        return float((self.stationary * _entropy(self.transition)).sum())

    def block_entropy(self, length: int) -> float:
        """Joint entropy of ``length`` ≤ k consecutive tokens under the stationary distribution."""
        if not 1 <= length <= self.order:
            raise ValueError(f"block length must be in [1, {self.order}], got {length}")
        joint = self.stationary.view((self.vocab_size,) * self.order)
        marginal = joint.sum(dim=tuple(range(length, self.order))) if length < self.order else joint
        return float(_entropy(marginal.flatten()))

    def optimum_loss(self, seq_len: int) -> float:
        """The best mean loss over the ``seq_len`` targets x_1..x_T of a sequence x_0..x_T started stationary.

        Target j is predicted from x_<j. From j ≥ k on that costs the entropy rate; before, the predictor lacks
        context and pays H(X_j | X_<j) = H_(j+1) − H_j (block entropies), which telescopes to H_k − H_1.
        """
        if seq_len < self.order:
            raise ValueError(f"data.seq_len={seq_len} must be ≥ data.order={self.order}")
        early = self.block_entropy(self.order) - self.block_entropy(1)
        return (early + (seq_len - self.order + 1) * self.entropy_rate) / seq_len

    def sample(self, num_sequences: int, length: int, generator: torch.Generator) -> Tensor:
        """(num_sequences, length) int64 tokens; the first k tokens are a context drawn from π."""
        if length < self.order:
            raise ValueError(f"sequence length {length} is shorter than the order {self.order}")
        context = _draw(self.stationary.expand(num_sequences, -1), generator)
        powers = self.vocab_size ** torch.arange(self.order - 1, -1, -1)
        tokens = [(context[:, None] // powers) % self.vocab_size]
        for _ in range(length - self.order):
            token = _draw(self.transition[context], generator)
            tokens.append(token[:, None])
            context = self.next_context[context, token]
        return torch.cat(tokens, dim=1)


def _draw(probs: Tensor, generator: torch.Generator) -> Tensor:
    """One categorical draw per row by inverting the cumulative distribution."""
    cdf = probs.cumsum(-1)
    u = torch.rand(probs.shape[0], 1, dtype=probs.dtype, generator=generator) * cdf[:, -1:]
    return (u >= cdf).sum(-1).clamp_(max=probs.shape[-1] - 1)


def load_synthetic_lm(
    vocab_size: int = 32,
    order: int = 2,
    alpha: float = 0.1,
    seq_len: int = 64,
    num_train: int = 8192,
    num_val: int = 1024,
    seed: int = 0,
) -> Dataset:
    """Windows (inputs, targets) = (x_0..x_(T-1), x_1..x_T) of independent stationary sequences, T = ``seq_len``.

    ``seed`` fixes both the language and the samples; ``spec.optimum_loss`` is the exact best mean loss.
    """
    if num_train < 1 or num_val < 1:
        raise ValueError(f"data.num_train and data.num_val must be ≥ 1, got {num_train} and {num_val}")
    language = MarkovLanguage(vocab_size, order, alpha, seed)
    tokens = language.sample(num_train + num_val, seq_len + 1, torch.Generator().manual_seed(seed))
    train, val = tokens[:num_train], tokens[num_train:]
    spec = DataSpec(
        task="lm",
        input_shape=(seq_len,),
        num_classes=vocab_size,
        optimum_loss=language.optimum_loss(seq_len),
        extra={"entropy_rate": language.entropy_rate, "order": order, "alpha": alpha},
    )
    return Dataset(
        spec=spec,
        train=TensorDataset(train[:, :-1], train[:, 1:]),
        val=TensorDataset(val[:, :-1], val[:, 1:]),
        name="synthetic_lm",
    )
