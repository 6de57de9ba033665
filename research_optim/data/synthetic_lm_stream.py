"""The synthetic Markov language as an endless stream: fresh sequences every step, so train loss ≈ population loss.

The same language as ``synthetic_lm`` (a random order-k chain, sequences started from its stationary distribution,
an exactly known optimum loss), but the training split never repeats a sequence: the gap to the optimum measures
optimisation alone. Validation and test are fixed samples drawn from their own generators.
"""
from __future__ import annotations

import functools

import torch
from torch import Tensor

from research_optim.data.base import DataSpec, Dataset
from research_optim.data.fresh_samples import FreshSamples, fixed_split
from research_optim.data.synthetic_lm import MarkovLanguage


def _draw(language: MarkovLanguage, seq_len: int, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    tokens = language.sample(n, seq_len + 1, generator)
    return tokens[:, :-1], tokens[:, 1:]


def load_synthetic_lm_stream(vocab_size: int = 32, order: int = 1, alpha: float = 0.1, seq_len: int = 32,
                             num_val: int = 1024, num_test: int = 1024, seed: int = 0) -> Dataset:
    """``seed`` fixes the language and the validation/test samples; the run's seed picks its training stream."""
    if num_val < 1 or num_test < 1:
        raise ValueError(f"data.num_val and data.num_test must be ≥ 1, got {num_val} and {num_test}")
    language = MarkovLanguage(vocab_size, order, alpha, seed)
    draw = functools.partial(_draw, language, seq_len)
    spec = DataSpec(task="lm", input_shape=(seq_len,), num_classes=vocab_size,
                    optimum_loss=language.optimum_loss(seq_len),
                    extra={"entropy_rate": language.entropy_rate, "order": order, "alpha": alpha, "stream": True})
    stream = ("synthetic_lm_stream", vocab_size, order, alpha, seq_len, seed)
    return Dataset(spec=spec, train=FreshSamples(draw, stream), val=fixed_split(draw, num_val, *stream, "val"),
                   test=fixed_split(draw, num_test, *stream, "test"), name="synthetic_lm_stream")
