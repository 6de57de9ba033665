"""SaLSA's wall-clock overhead over its base direction without a line search, and forwards per step.

    python -m benchmarks.salsa_overhead                       # the default experiment (MLP on digits, 3000 steps)
    python -m benchmarks.salsa_overhead --overrides experiment=lm_synthetic --repeats 2

Each configuration trains in-process ``--repeats`` times, interleaved; the table reports the median training time
(``train_time``: evaluation excluded) and its ratio to the base. The bases are Adam without line search: the
library's per-tensor ``AdamW`` (the same arithmetic SaLSA's speed-up steps run) with weight decay 0 and torch's
``AdamW``. SaLSA's extra cost comes from its line-search steps (forward passes at trial points, one host sync);
speed-up steps add no forward and no host sync (tested by ``tests/optim/test_salsa.py``).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile

from benchmarks.common import print_table, run_experiment

CONFIGS = {
    "salsa": ["optimizer=salsa"],
    "adamw (ours)": ["optimizer=lib_adamw", "optimizer.weight_decay=0.0"],
    "adamw (torch)": ["optimizer=adamw", "optimizer.weight_decay=0.0"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--overrides", nargs="*", default=[], help="extra config overrides for every run")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in CONFIGS}
    forwards: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as root:
        for _ in range(args.repeats):
            for name, overrides in CONFIGS.items():
                summary, metrics = run_experiment([*overrides, *args.overrides], root)
                times[name].append(summary["train_time"])
                steps = [m for m in metrics if m.get("split") == "train" and "opt/forwards_per_step" in m]
                if steps:
                    forwards[name] = statistics.mean(m["opt/forwards_per_step"] for m in steps)
    medians = {name: statistics.median(values) for name, values in times.items()}
    rows = []
    for name in CONFIGS:
        rows.append([name, f"{medians[name]:.2f}", f"{medians['salsa'] / medians[name]:.3f}",
                     f"{forwards[name]:.3f}" if name in forwards else "1"])
    print(f"overrides: {args.overrides or '(default experiment)'}; median of {args.repeats} interleaved runs\n")
    print_table(["optimizer", "train_time s", "salsa time ÷ this", "forwards per step"], rows)


if __name__ == "__main__":
    main()
