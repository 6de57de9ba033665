"""Lion vs AdamW at batch 8, 64 and 256, each at its own tuned (lr, wd): final val and train loss over seeds.

    python experiments/lion/batch_table.py --out experiments/lion/batch

Batch 64: the best (lr, wd) cell of the lr × wd grid (runs/lion/lr_wd, lowest mean val loss over its 3 seeds).
Batch 8 and 256: runs/lion/batch_b<B> (lr re-tuned at that batch size, wd from the batch-64 grid).
``lion_minus_adamw`` > 0 means Lion is worse; it counts as a difference when it exceeds the sum of the two stds.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from experiments.tools import load, write  # noqa: E402
from research_optim.report.analysis import final_value  # noqa: E402


def finals(runs) -> pd.DataFrame:
    return pd.DataFrame([dict(optimizer=r.optimizer, lr=r.hparams["lr"], wd=r.hparams["weight_decay"], seed=r.seed,
                              val=final_value(r.curve("loss", "val")), train=final_value(r.curve("loss"), 5))
                         for r in runs])


def best_cell(frame: pd.DataFrame) -> pd.DataFrame:
    """Per optimizer, the runs of the (lr, wd) cell with the lowest mean val loss."""
    means = frame.groupby(["optimizer", "lr", "wd"])["val"].mean().reset_index()
    best = means.loc[means.groupby("optimizer")["val"].idxmin(), ["optimizer", "lr", "wd"]]
    return frame.merge(best, on=["optimizer", "lr", "wd"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="runs/lion")
    parser.add_argument("--out")
    args = parser.parse_args()
    sources = {8: f"{args.root}/batch_b8", 64: f"{args.root}/lr_wd", 256: f"{args.root}/batch_b256"}
    rows = []
    for batch, source in sources.items():
        frame = best_cell(finals(load([source])))
        stats = frame.groupby(["optimizer", "lr", "wd"]).agg(val=("val", "mean"), val_std=("val", "std"),
                                                             train=("train", "mean"), train_std=("train", "std"),
                                                             seeds=("seed", "count")).reset_index()
        by = stats.set_index("optimizer")
        gap = by.loc["lion", "val"] - by.loc["adamw", "val"]
        spread = by.loc["lion", "val_std"] + by.loc["adamw", "val_std"]
        for row in stats.to_dict("records"):
            rows.append(dict(batch=batch, **row, lion_minus_adamw_val=gap, exceeds_spread=abs(gap) > spread))
    write(pd.DataFrame(rows), args.out)


if __name__ == "__main__":
    main()
