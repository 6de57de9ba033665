"""Small tensors in a compiled group: compiled too or on the foreach path (before or after the compiled calls), on a
real model's parameter set, side by side — the measurement behind each rule's ``auto_compiled_min_numel`` (2 for every
rule but Schedule-Free SGD's, 65,536 there) and behind ``implementation.compiled_each`` stepping the tensors it leaves
to the eager path first.

    taskset -c 1 env OMP_NUM_THREADS=1 python -m benchmarks.small_tensors
    python -m benchmarks.small_tensors --sets vit_s gpt --rules lion sf_sgd --rounds 12

In a model the small tensors (biases, norms: 101 of ViT-S/16's 152) come between large ones, whose kernels leave the
caches cold, so a lone small tensor's cost (``compiled_calls --tensors 101``) does not settle the question. Each rule
is built three times with ``implementation="compiled"`` and timed round-robin against torch ``AdamW(fused=True)``,
the four optimizers built anew each round in a rotated order (``common.build_rotated``); ratios are medians over the
rounds:

* ``all compiled`` — every tensor compiled;
* ``small on foreach`` — the tensors under ``--below`` elements left to the foreach path (``implementation.compilable``
  wrapped), stepped before the compiled calls, as ``compiled_each`` does;
* ``small on foreach, after`` — the same, the foreach step moved after the compiled calls.
"""
from __future__ import annotations

import argparse
import statistics
from typing import Any

import torch

from benchmarks.common import PARAM_SETS, build_rotated, make_params, print_table, time_round_robin
from benchmarks.step_time import RULES_BY_NAME, pin
from research_optim.optim import direction, implementation, schedule_free


class Patched:
    """``optimizer`` whose step runs with ``patches`` — (module, attribute, value) — in place."""

    def __init__(self, optimizer: torch.optim.Optimizer, patches: list[tuple[Any, str, Any]]) -> None:
        self.optimizer, self.patches = optimizer, patches

    def step(self) -> Any:
        saved = [(module, name, getattr(module, name)) for module, name, _ in self.patches]
        for module, name, value in self.patches:
            setattr(module, name, value)
        try:
            return self.optimizer.step()
        finally:
            for module, name, value in saved:
                setattr(module, name, value)


def small_on_foreach(below: int) -> list[tuple[Any, str, Any]]:
    compilable = implementation.compilable
    return [(implementation, "compilable", lambda tensors: compilable(tensors) and tensors[0].numel() >= below)]


def eager_after() -> list[tuple[Any, str, Any]]:
    """``compiled_each`` with the eager step of the tensors it leaves run after its compiled calls."""
    def deferring(original: Any) -> Any:
        def compiled_each(fn, owner, params, tensors_of, args_of, eager_step, *rest):
            left: list[torch.Tensor] = []
            out = original(fn, owner, params, tensors_of, args_of, left.extend, *rest)
            if left:
                eager_step(left)
            return out
        return compiled_each
    return [(module, "compiled_each", deferring(module.compiled_each)) for module in (direction, schedule_free)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", nargs="+", default=["vit_s"], choices=sorted(PARAM_SETS))
    parser.add_argument("--rules", nargs="+", default=["lion", "adamw (ours)", "sf_adamw", "sf_sgd"],
                        choices=sorted(RULES_BY_NAME))
    parser.add_argument("--below", type=int, default=1 << 16, help="the small tensors' bound (elements)")
    parser.add_argument("--rounds", type=int, default=8,
                        help="a multiple of 4 builds each optimizer first equally often")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--core", type=int, default=None)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    print(f"torch {torch.__version__}, {pin(args.core)}\n")
    device, rows = torch.device("cpu"), []
    variants = {"all compiled": [], "small on foreach": small_on_foreach(args.below),
                "small on foreach, after": small_on_foreach(args.below) + eager_after()}
    for set_name in args.sets:
        shapes = PARAM_SETS[set_name]()
        small = sum(torch.Size(s).numel() < args.below for s in shapes)
        for name in args.rules:
            rule = RULES_BY_NAME[name]
            builders = {"fused": lambda: torch.optim.AdamW(make_params(shapes, device), lr=1e-3, fused=True)}
            for variant, patches in variants.items():
                builders[variant] = lambda patches=patches: Patched(
                    rule.ours(make_params(shapes, device), "compiled"), patches)
            rounds = [time_round_robin({key: opt.step for key, opt in build_rotated(builders, r).items()}, device,
                                       args.repeats) for r in range(args.rounds)]
            ratio = {key: statistics.median(t[key] / t["fused"] for t in rounds) for key in builders}
            rows.append([set_name, f"{small} of {len(shapes)}", name, *(f"{ratio[v]:.3f}" for v in variants)])
    print_table(["set", f"tensors < {args.below:,}", "rule", *(f"{v} ×fused" for v in variants)], rows)


if __name__ == "__main__":
    main()
