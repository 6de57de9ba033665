"""Compute overhead of the line searches, read from the study's own runs: forward passes per step and train time.

    python experiments/salsa/overhead.py runs/salsa/table --out experiments/salsa/overhead_from_runs

``forwards/step`` is the mean over logging windows of ``opt/forwards_per_step`` (every loss evaluation the
optimizer makes, the gradient's own forward included; 1 for optimizers without a line search).
``train_time / adamw`` divides the median training time (evaluation excluded) over seeds by AdamW's on the same
task. The runs were not interleaved on a shared CPU, so this ratio is indicative; the interleaved measurement is
``benchmarks/salsa_overhead.py`` (run by run.sh into overhead_benchmark.txt).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from experiments.tools import load, write  # noqa: E402


def forwards_per_step(run) -> float:
    curve = run.curve("opt/forwards_per_step")
    return float(curve.mean()) if not curve.empty else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="+")
    parser.add_argument("--out")
    args = parser.parse_args()
    rows = [dict(task=r.task, optimizer=r.optimizer, seed=r.seed, forwards=forwards_per_step(r),
                 train_time=r.summary["final"]["train_time"]) for r in load(args.sources)]
    frame = pd.DataFrame(rows)
    table = frame.groupby(["task", "optimizer"]).agg(forwards_per_step=("forwards", "mean"),
                                                     median_train_time_s=("train_time", "median"),
                                                     seeds=("seed", "count")).reset_index()
    adamw = table[table.optimizer == "adamw"].set_index("task")["median_train_time_s"]
    table["train_time_vs_adamw"] = table.median_train_time_s / table.task.map(adamw)
    write(table, args.out)


if __name__ == "__main__":
    main()
