"""Tiny optimizers, one per protocol, that check what the training loop promises them.

They are test doubles of the protocol, not of any algorithm: the library's real optimizers are tested against
their references in tests/optim.
"""
from __future__ import annotations

import torch
from torch.optim import Optimizer


class ClosureSGD(Optimizer):
    """Line-search protocol: evaluates the loss three times per step and records whether they agree."""

    requires_closure = True

    def __init__(self, params, lr: float = 0.1):
        super().__init__(params, {"lr": lr})
        self.evaluations: list[tuple[float, float, float]] = []

    @torch.no_grad()
    def step(self, closure=None):
        if closure is None:
            raise RuntimeError("ClosureSGD needs a closure")
        with torch.enable_grad():
            loss = closure()                       # forward + backward
        again = closure(backwards=False)           # forward only, same point: must equal `loss`
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["lr"])
        moved = closure(backwards=False)           # forward at the new point
        self.evaluations.append((float(loss), float(again), float(moved)))
        return loss


class ModeSGD(Optimizer):
    """Train/eval protocol: parameters are shifted by +shift in eval mode; step refuses to run in eval mode."""

    def __init__(self, params, lr: float = 0.1, shift: float = 0.5):
        super().__init__(params, {"lr": lr, "shift": shift})
        self.training = True
        self.mode_log: list[str] = []

    def _shift(self, sign: float) -> None:
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    p.add_(sign * group["shift"])

    def eval(self):
        if self.training:
            self._shift(+1.0)
            self.training = False
            self.mode_log.append("eval")

    def train(self):
        if not self.training:
            self._shift(-1.0)
            self.training = True
            self.mode_log.append("train")

    @torch.no_grad()
    def step(self, closure=None):
        if not self.training:
            raise RuntimeError("ModeSGD.step() called in eval mode")
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["lr"])

    def state_dict(self):
        sd = super().state_dict()
        sd["training"] = self.training
        return sd

    def load_state_dict(self, state_dict):
        """Adopt the saved mode: the model's parameters were saved at the same time, in that mode."""
        state_dict = dict(state_dict)
        self.training = state_dict.pop("training")
        super().load_state_dict(state_dict)
