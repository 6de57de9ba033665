"""First-step compile cost of the compiled optimizer steps, with a cold and with a warm inductor cache.

    python -m benchmarks.compile_cost                   # ViT-S parameter set, CPU
    python -m benchmarks.compile_cost --set gpt --optimizers lion c_adamw

Each measurement is a fresh process (dynamo always traces again in a new process; inductor's FX graph cache in
``TORCHINDUCTOR_CACHE_DIR`` skips code generation and the C++ compiler when warm). "cold" uses a new empty cache
directory, "warm" the same directory again. The steady step time is the median of the following steps.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from benchmarks.common import PARAM_SETS, make_params, print_table

from research_optim.optim.registry import OPTIMIZERS

COMPILED = ("lion", "c_lion", "lib_adamw", "c_adamw", "lib_sgd", "sf_adamw", "sf_sgd")  # the names with that path


def child(name: str, set_name: str, steps: int) -> dict[str, float]:
    torch.set_grad_enabled(False)
    params = make_params(PARAM_SETS[set_name](), torch.device("cpu"))
    opt = OPTIMIZERS[name](params, implementation="compiled")
    if hasattr(opt, "train"):
        opt.train()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - start)
    return {"first": times[0], "steady": statistics.median(times[1:])}


def run_child(name: str, set_name: str, steps: int, cache_dir: str) -> dict[str, float]:
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache_dir)
    out = subprocess.run([sys.executable, "-m", "benchmarks.compile_cost", "--child", name, "--set", set_name,
                          "--steps", str(steps)], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", default="vit_s", choices=sorted(PARAM_SETS))
    parser.add_argument("--optimizers", nargs="+", default=["lion", "c_adamw", "sf_adamw"], choices=COMPILED)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.set, args.steps)))
        return
    rows = []
    for name in args.optimizers:
        with tempfile.TemporaryDirectory(prefix="inductor-cache-") as cache_dir:
            cold = run_child(name, args.set, args.steps, cache_dir)
            warm = run_child(name, args.set, args.steps, cache_dir)
        rows.append([name, f"{cold['first']:.1f}", f"{warm['first']:.1f}", f"{warm['steady'] * 1e3:.1f}"])
    print(f"parameter set {args.set}, torch {torch.__version__}, fresh process per cell\n")
    print_table(["optimizer", "first step s (cold cache)", "first step s (warm cache)", "steady step ms"], rows)


if __name__ == "__main__":
    main()
