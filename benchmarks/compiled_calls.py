"""The cost of calling the compiled step once per tensor: the same number of elements split into more tensors.

    taskset -c 1 env OMP_NUM_THREADS=1 python -m benchmarks.compiled_calls
    python -m benchmarks.compiled_calls --rule c_adamw --numel 8000000 --tensors 1 16 64 --device cuda
    python -m benchmarks.compiled_calls --rule c_lion --numel 38784 --tensors 101 --implementation compiled

Each row steps ``--numel`` float32 elements split into N equal tensors (every one large enough for the compiled
path under ``implementation="auto"``), with the rule's default (compiled, one call per tensor) and its foreach path,
against torch ``AdamW(fused=True)`` on the same split, timed round-robin (medians over ``--rounds`` rounds, the
three optimizers built anew each round in a rotated order: ``common.build_rotated``). The kernels move the same
bytes in every row, so what grows with N is the per-call cost: ``µs/call`` = (t_N − t_first) / (N − N_first),
against the first row (``--tensors`` 1 by default). ``--implementation compiled`` compiles a group however small
(``"auto"`` leaves groups under 1M elements to the eager path): the per-tensor cost of a compiled call against
foreach's.
"""
from __future__ import annotations

import argparse
import statistics

import torch

from benchmarks.common import build_rotated, make_params, print_table, time_round_robin
from benchmarks.step_time import RULES_BY_NAME


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rule", default="lion", choices=sorted(RULES_BY_NAME))
    parser.add_argument("--numel", type=int, default=16_000_000)
    parser.add_argument("--tensors", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--rounds", type=int, default=6,
                        help="a multiple of 3 builds each optimizer first equally often")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--implementation", default="auto", choices=["auto", "compiled"],
                        help="the default column's implementation")
    args = parser.parse_args()
    device, rule = torch.device(args.device), RULES_BY_NAME[args.rule]
    rows, first = [], None
    for n in args.tensors:
        shapes = [(args.numel // n,)] * n
        builders = {"fused": lambda: torch.optim.AdamW(make_params(shapes, device), lr=1e-3, fused=True),
                    "default": lambda: rule.ours(make_params(shapes, device), args.implementation),
                    "foreach": lambda: rule.ours(make_params(shapes, device), "foreach")}
        rounds = [time_round_robin({name: optimizer.step for name, optimizer in build_rotated(builders, r).items()},
                                   device, args.repeats) for r in range(args.rounds)]
        t = {k: statistics.median(r[k] for r in rounds) for k in builders}
        first = first or (n, t["default"])
        per_call = (t["default"] - first[1]) / (n - first[0]) * 1e6 if n != first[0] else None
        rows.append([n, f"{args.numel // n:,}", f"{t['default'] * 1e3:.2f}", f"{t['default'] / t['fused']:.2f}",
                     f"{t['foreach'] / t['fused']:.2f}", f"{t['fused'] * 1e3:.2f}",
                     "-" if per_call is None else f"{per_call:.0f}"])
    print(f"{args.rule}, {args.numel:,} float32 elements, {device}, {torch.get_num_threads()} threads, default: "
          f"implementation={args.implementation!r}\n")
    print_table(["tensors", "elements each", "default ms", "default ×fused", "foreach ×fused", "fused ms",
                 "µs/call"], rows)


if __name__ == "__main__":
    main()
