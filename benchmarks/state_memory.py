"""Optimizer state bytes per parameter (float32 parameters), after a few steps.

    python -m benchmarks.state_memory

Counts every tensor in ``optimizer.state`` (what a checkpoint stores), and for SaLSA also the line search's
working buffer (its p0 copy, allocated once on the first search and kept). Expected: Lion 4, AdamW 8, SF-AdamW 8
(z and v), SF-SGD 4 (z), cautious masking adds none.
"""
from __future__ import annotations

import argparse

import torch

from benchmarks.common import gpt_shapes, make_params, print_table
from research_optim.optim.adamw import AdamW, CautiousAdamW
from research_optim.optim.lion import CautiousLion, Lion
from research_optim.optim.salsa import SaLSA
from research_optim.optim.schedule_free import AdamWScheduleFree, SGDScheduleFree
from research_optim.optim.schedule_free_reference import AdamWScheduleFreeReference
from research_optim.optim.sgd import SGD


def _train(cls, **kw):
    def build(params):
        opt = cls(params, **kw)
        opt.train()
        return opt
    return build


OPTIMIZERS = {
    "torch AdamW (fused)": lambda ps: torch.optim.AdamW(ps, fused=True),
    "lion": lambda ps: Lion(ps),
    "c_lion": lambda ps: CautiousLion(ps),
    "adamw (ours)": lambda ps: AdamW(ps),
    "c_adamw": lambda ps: CautiousAdamW(ps),
    "sgd momentum (ours)": lambda ps: SGD(ps, momentum=0.9),
    "cautious sgd, phi=soft": lambda ps: SGD(ps, momentum=0.9, cautious="soft", cautious_factor=0.5),
    "sf_adamw": _train(AdamWScheduleFree),
    "sf_adamw, cautious": _train(AdamWScheduleFree, cautious="indicator_mean"),
    "sf_sgd": _train(SGDScheduleFree),
    "sf_adamw_reference (x, y, z explicit)": _train(AdamWScheduleFreeReference),
    "salsa": lambda ps: SaLSA(ps),
}


def tensor_bytes(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def measure(build, shapes, steps: int = 3) -> tuple[float, float]:
    params = make_params(shapes, torch.device("cpu"))
    opt = build(params)
    numel = sum(p.numel() for p in params)
    for _ in range(steps):
        if getattr(opt, "requires_closure", False):
            opt.step(lambda: sum((p * p).sum() for p in params))
        else:
            opt.step()
    state = tensor_bytes(list(opt.state.values()))
    ray = getattr(opt, "_ray", None)
    buffers = tensor_bytes(ray._origin) if ray is not None else 0
    return state / numel, buffers / numel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args()
    shapes = gpt_shapes(n_layer=2, n_embd=128, vocab=1024, context=128)
    numel = sum(int(torch.Size(s).numel()) for s in shapes)
    print(f"float32 parameters: {numel / 1e6:.2f}M in {len(shapes)} tensors (GPT-style, 2×128)\n")
    rows = []
    for name, build in OPTIMIZERS.items():
        state, buffers = measure(build, shapes)
        rows.append([name, f"{state:.2f}", f"{buffers:.2f}" if buffers else "-"])
    print_table(["optimizer", "state bytes/param", "working buffers bytes/param"], rows)


if __name__ == "__main__":
    main()
