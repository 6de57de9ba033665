"""Teacher–student classification: fresh Gaussian inputs labelled by a fixed random teacher, with a known Bayes loss.

Inputs x ~ N(0, I_d). A random one-hidden-layer teacher (tanh, width ``teacher_width``) gives logits
``logit_scale · W₂ tanh(W₁ x)`` (W₁ ~ N(0, 1/d), W₂ ~ N(0, 1/width)), and the label is *sampled* from their softmax.
No predictor can beat the teacher's own probabilities, so the Bayes loss is the teacher's expected entropy
E_x[H(softmax(teacher(x)))]. It has no closed form; it is estimated once from ``optimum_samples`` fresh inputs, and
its standard error (std of H / √n) is stated in ``spec.extra["optimum_stderr"]``. A student that cannot represent
the teacher exactly keeps an approximation gap on top of it: the gap to the optimum is an upper bound of the
optimisation error. The training split never repeats an example (``fresh_samples``).
"""
from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from research_optim.data.base import DataSpec, Dataset
from research_optim.data.fresh_samples import FreshSamples, fixed_split, generator


def _entropy(probs: Tensor) -> Tensor:
    return -torch.special.xlogy(probs, probs).sum(-1)


class Teacher:
    """The labelling process: p(y | x) = softmax(scale · W₂ tanh(W₁ x)), computed in float64."""

    def __init__(self, input_dim: int, num_classes: int, width: int, logit_scale: float, seed: int) -> None:
        g = generator("teacher", input_dim, num_classes, width, logit_scale, seed)
        self.input_dim = input_dim
        self.w1 = torch.randn(width, input_dim, generator=g, dtype=torch.float64) / math.sqrt(input_dim)
        self.w2 = torch.randn(num_classes, width, generator=g, dtype=torch.float64) * (logit_scale / math.sqrt(width))

    def probs(self, x: Tensor) -> Tensor:
        return torch.softmax(torch.tanh(x.double() @ self.w1.T) @ self.w2.T, dim=-1)

    def draw(self, n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` fresh (x, y): x float32, y sampled from the teacher's probabilities."""
        x = torch.randn(n, self.input_dim, generator=g)
        y = torch.multinomial(self.probs(x), 1, generator=g).squeeze(1)
        return x, y

    def bayes_loss(self, samples: int, g: torch.Generator, chunk: int = 65536) -> tuple[float, float]:
        """(E_x[H(p(·|x))], its Monte Carlo standard error) from ``samples`` fresh inputs."""
        total = total_sq = 0.0
        for lo in range(0, samples, chunk):
            h = _entropy(self.probs(torch.randn(min(chunk, samples - lo), self.input_dim, generator=g)))
            total, total_sq = total + float(h.sum()), total_sq + float((h * h).sum())
        mean = total / samples
        variance = max(total_sq / samples - mean * mean, 0.0) * samples / max(samples - 1, 1)
        return mean, math.sqrt(variance / samples)


@functools.lru_cache(maxsize=8)
def _bayes_loss(stream: tuple, samples: int) -> tuple[float, float]:
    """The Bayes loss of the teacher that ``stream`` names and its standard error, estimated once per process (a
    tuning worker runs many trials on one task)."""
    return Teacher(*stream[1:]).bayes_loss(samples, generator(*stream, "bayes"))


def load_teacher_student(input_dim: int = 32, num_classes: int = 10, teacher_width: int = 64,
                         logit_scale: float = 4.0, num_val: int = 8192, num_test: int = 8192,
                         optimum_samples: int = 1 << 20, seed: int = 0) -> Dataset:
    """``seed`` fixes the teacher, the validation/test samples and the Bayes-loss estimate; the run's seed picks
    its training stream."""
    for key, value in (("input_dim", input_dim), ("num_classes", num_classes), ("teacher_width", teacher_width),
                       ("num_val", num_val), ("num_test", num_test), ("optimum_samples", optimum_samples)):
        if value < 1:
            raise ValueError(f"data.{key} must be ≥ 1, got {value}")
    if num_classes < 2 or not logit_scale > 0:
        raise ValueError(f"data.num_classes must be ≥ 2 and data.logit_scale > 0, got {num_classes}, {logit_scale}")
    teacher = Teacher(input_dim, num_classes, teacher_width, logit_scale, seed)
    stream = ("teacher_student", input_dim, num_classes, teacher_width, logit_scale, seed)
    optimum, stderr = _bayes_loss(stream, optimum_samples)
    spec = DataSpec(task="classification", input_shape=(input_dim,), num_classes=num_classes, optimum_loss=optimum,
                    extra={"optimum_stderr": stderr, "optimum_samples": optimum_samples, "stream": True})
    draw = teacher.draw
    return Dataset(spec=spec, train=FreshSamples(draw, stream), val=fixed_split(draw, num_val, *stream, "val"),
                   test=fixed_split(draw, num_test, *stream, "test"), name="teacher_student")
