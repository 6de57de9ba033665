"""Small tensors in a compiled group: compiled too or on the foreach path, on a real model's parameter set, side by
side — the measurement behind each rule's ``auto_compiled_min_numel`` (2 for every rule but Schedule-Free SGD's,
65,536 there).

    taskset -c 1 env OMP_NUM_THREADS=1 python -m benchmarks.small_tensors
    python -m benchmarks.small_tensors --sets vit_s gpt --rules lion sf_sgd --rounds 12

In a model the small tensors (biases, norms: 101 of ViT-S/16's 152) come between large ones, whose kernels leave the
caches cold, so a lone small tensor's cost (``compiled_calls --tensors 101``) does not settle the question. Each rule
is built twice with ``implementation="compiled"`` — once with every tensor compiled, once with the tensors under
``--below`` elements left to the foreach path (``implementation.compilable`` wrapped during that optimizer's step) —
and timed round-robin against torch ``AdamW(fused=True)``, the three optimizers built anew each round in a rotated
order (``common.build_rotated``); ratios are medians over the rounds.
"""
from __future__ import annotations

import argparse
import statistics
from typing import Any

import torch

from benchmarks.common import PARAM_SETS, build_rotated, make_params, print_table, time_round_robin
from benchmarks.step_time import RULES_BY_NAME, pin
from research_optim.optim import implementation


class SmallTensorsEager:
    """``optimizer`` whose step leaves the tensors under ``below`` elements to its eager path."""

    def __init__(self, optimizer: torch.optim.Optimizer, below: int) -> None:
        self.optimizer, self.below = optimizer, below

    def step(self) -> Any:
        original = implementation.compilable
        implementation.compilable = lambda tensors: original(tensors) and tensors[0].numel() >= self.below
        try:
            return self.optimizer.step()
        finally:
            implementation.compilable = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", nargs="+", default=["vit_s"], choices=sorted(PARAM_SETS))
    parser.add_argument("--rules", nargs="+", default=["lion", "adamw (ours)", "sf_adamw", "sf_sgd"],
                        choices=sorted(RULES_BY_NAME))
    parser.add_argument("--below", type=int, default=1 << 16, help="the small tensors' bound (elements)")
    parser.add_argument("--rounds", type=int, default=6,
                        help="a multiple of 3 builds each optimizer first equally often")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--core", type=int, default=None)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    print(f"torch {torch.__version__}, {pin(args.core)}\n")
    device, rows = torch.device("cpu"), []
    for set_name in args.sets:
        shapes = PARAM_SETS[set_name]()
        small = sum(torch.Size(s).numel() < args.below for s in shapes)
        for name in args.rules:
            rule = RULES_BY_NAME[name]
            builders = {"fused": lambda: torch.optim.AdamW(make_params(shapes, device), lr=1e-3, fused=True),
                        "all compiled": lambda: rule.ours(make_params(shapes, device), "compiled"),
                        "small on foreach": lambda: SmallTensorsEager(
                            rule.ours(make_params(shapes, device), "compiled"), args.below)}
            rounds = [time_round_robin({key: opt.step for key, opt in build_rotated(builders, r).items()}, device,
                                       args.repeats) for r in range(args.rounds)]
            ratio = {key: statistics.median(t[key] / t["fused"] for t in rounds) for key in builders}
            rows.append([set_name, f"{small} of {len(shapes)}", name, f"{ratio['all compiled']:.3f}",
                         f"{ratio['small on foreach']:.3f}"])
    print_table(["set", f"tensors < {args.below:,}", "rule", "all compiled ×fused", "small on foreach ×fused"], rows)


if __name__ == "__main__":
    main()
