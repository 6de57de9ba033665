"""The lr × wd grid of Lion and AdamW: final val (and train) loss per cell, the best cell, and the rule's ratios.

    python experiments/lion/grid_table.py runs/lion/lr_wd runs/lion/lr_wd_edge --out experiments/lion/lr_wd

Writes ``<out>.md/csv`` (one row per optimizer × lr × wd: mean ± std over seeds) and ``<out>_best.md/csv``:
each optimizer's best cell by val loss and by train loss, and AdamW/Lion ratios of lr and wd at the best cells
(the paper's rule: lr 3–10× smaller and wd 3–10× larger for Lion, i.e. both ratios between 3 and 10).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from experiments.lion.batch_table import finals  # noqa: E402
from experiments.tools import load, write  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="+")
    parser.add_argument("--out")
    args = parser.parse_args()
    frame = finals(load(args.sources))
    cells = frame.groupby(["optimizer", "lr", "wd"]).agg(val=("val", "mean"), val_std=("val", "std"),
                                                         train=("train", "mean"), train_std=("train", "std"),
                                                         seeds=("seed", "count")).reset_index()
    write(cells, args.out)
    rows = []
    for metric in ("val", "train"):
        best = cells.loc[cells.groupby("optimizer")[metric].idxmin()].set_index("optimizer")
        rows.append(dict(metric=metric, adamw_lr=best.loc["adamw", "lr"], adamw_wd=best.loc["adamw", "wd"],
                         lion_lr=best.loc["lion", "lr"], lion_wd=best.loc["lion", "wd"],
                         lr_ratio_adamw_over_lion=best.loc["adamw", "lr"] / best.loc["lion", "lr"],
                         wd_ratio_lion_over_adamw=best.loc["lion", "wd"] / best.loc["adamw", "wd"],
                         adamw_best=best.loc["adamw", metric], lion_best=best.loc["lion", metric]))
    write(pd.DataFrame(rows), f"{args.out}_best" if args.out else None)


if __name__ == "__main__":
    main()
