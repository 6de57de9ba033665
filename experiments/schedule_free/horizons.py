"""SF-AdamW at each horizon vs AdamW + cosine tuned for that horizon: validation loss and accuracy (mean ± std).

    python experiments/schedule_free/horizons.py --out experiments/schedule_free/horizons

Cosine: the final evaluation of each run in runs/schedule_free/cosine_h<H> (its schedule ends at H).
Schedule-Free: the evaluation at step H (at x) of the 1000-step β = 0.9 runs in runs/schedule_free/sf_beta —
the same runs at every horizon, which is the paper's claim (no stop time needed).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from experiments.tools import load, write  # noqa: E402

HORIZONS = (250, 500, 1000)


def at_step(run, metric: str, step: int) -> float:
    curve = run.curve(metric, "val")
    return float(curve.loc[step]) if step in curve.index else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", default="runs/schedule_free")
    parser.add_argument("--out")
    args = parser.parse_args()
    sf = [r for r in load([f"{args.root}/sf_beta"]) if r.hparams["betas"][0] == 0.9]
    rows = []
    for horizon in HORIZONS:
        cosine = load([f"{args.root}/cosine_h{horizon}"])
        for name, runs in (("adamw+cosine (tuned for H)", cosine), ("sf_adamw (one run)", sf)):
            for metric in ("loss", "accuracy"):
                values = pd.Series([at_step(r, metric, horizon) for r in runs])
                rows.append(dict(horizon=horizon, method=name, metric=f"val {metric}", mean=values.mean(),
                                 std=values.std(), seeds=int(values.count()),
                                 lr=runs[0].hparams["lr"]))
    table = pd.DataFrame(rows)
    loss = table[table.metric == "val loss"].pivot(index="horizon", columns="method", values=["mean", "std"])
    gap = loss["mean"]["sf_adamw (one run)"] - loss["mean"]["adamw+cosine (tuned for H)"]
    spread = loss["std"].sum(axis=1)
    verdict = pd.DataFrame({"sf_minus_cosine_val_loss": gap, "sum_of_stds": spread,
                            "exceeds_spread": gap.abs() > spread})
    write(table, args.out)
    write(verdict, f"{args.out}_verdict" if args.out else None)


if __name__ == "__main__":
    main()
