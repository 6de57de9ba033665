"""A plain multilayer perceptron over flattened inputs."""
from __future__ import annotations

import math

from torch import nn

from research_optim.data.base import DataSpec


class MLP(nn.Sequential):
    def __init__(self, spec: DataSpec, hidden: int = 256, depth: int = 2, dropout: float = 0.0, batch_norm: bool = False):
        if spec.task != "classification":
            raise ValueError(f"model=mlp needs classification data, got a {spec.task!r} task")
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(spec.input_shape)
        for _ in range(depth):
            layers += [nn.Linear(width, hidden)]
            if batch_norm:
                layers += [nn.BatchNorm1d(hidden)]
            layers += [nn.GELU(), nn.Dropout(dropout)]
            width = hidden
        layers += [nn.Linear(width, spec.num_classes)]
        super().__init__(*layers)
