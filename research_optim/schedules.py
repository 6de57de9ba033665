"""Learning-rate schedules: linear warmup, then cosine / linear decay or constant — as a multiplier of each group's lr."""
from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

SCHEDULES = ("cosine", "linear", "constant")


def warmup_steps(warmup: float | int, total_steps: int) -> int:
    """An int is a number of steps; a float in [0, 1) is a fraction of the run."""
    if isinstance(warmup, float) and warmup < 1.0:
        return int(round(warmup * total_steps))
    return int(warmup)


def lr_multiplier(step: int, name: str, total_steps: int, warmup: int, final_ratio: float) -> float:
    """The factor applied to the base lr before optimizer step ``step + 1`` (``step`` steps done)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if name == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    if name == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif name == "linear":
        shape = 1.0 - progress
    else:
        raise ValueError(f"schedule.name must be one of {SCHEDULES}, got {name!r}")
    return final_ratio + (1.0 - final_ratio) * shape


def build_schedule(optimizer: Optimizer, name: str, total_steps: int, warmup_steps_: float | int = 0,
                   final_lr_ratio: float = 0.0) -> LambdaLR:
    warm = warmup_steps(warmup_steps_, total_steps)
    return LambdaLR(optimizer, lambda step: lr_multiplier(step, name, total_steps, warm, final_lr_ratio))
