"""Random generator states, taken and put back: one step's randomness replayed (a closure's re-evaluations, DDP's
priming pass) and every rank's generators carried in a checkpoint, for a bit-exact resume."""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def snapshot(host: bool = False) -> dict[str, Any]:
    """The torch generators — the CPU's, and every GPU's once CUDA is in use; ``host``: Python's and NumPy's too."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if host:
        state.update(python=random.getstate(), numpy=np.random.get_state())
    return state


def restore(state: dict[str, Any]) -> None:
    """Put back the generators ``state`` holds (:func:`snapshot`)."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])
    if "python" in state:
        random.setstate(state["python"])
        np.random.set_state(state["numpy"])
