"""Where SaLSA's step size settles, against the tuned baseline's lr, and what its line search costs in forward passes.

    python experiments/salsa/step_sizes.py runs/studies/salsa --out experiments/salsa/step_sizes

Per workload (each subfolder of the study with a ``defaults`` group and a ``tuned/selection.json``) and line-search
arm (optimizer, c): the step size each run settles at — the median of its logged ``opt/step_size`` over the last 20%
of training — as the median and range over seeds; that median ÷ the selected (peak) lr of the tuned baseline
whose direction it scales (Adam for SaLSA, SGD for SGD-SaLSA); and the forward passes per step over the whole run
(the report's forward-pass count ÷ steps), mean over seeds.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere without installing

from experiments.tools import load, write  # noqa: E402
from research_optim.report.methods import SELECTION_FILE  # noqa: E402


BASELINE = {"salsa": "adamw", "salsa_sgd": "sgd"}  # the tuned optimizer whose direction each line search scales


def settled_step_size(run) -> float:
    sizes = run.metrics["opt/step_size"].dropna()
    return float(sizes.iloc[-max(1, len(sizes) // 5):].median())


def forwards_per_step(run) -> float:
    forwards = run.forward_passes()
    return float(forwards.iloc[-1] / forwards.index[-1])


def table(study: Path) -> pd.DataFrame:
    rows = []
    for workload in sorted(p for p in study.iterdir() if (p / "tuned" / SELECTION_FILE).exists()):
        selected = json.loads((workload / "tuned" / SELECTION_FILE).read_text())["selected"]
        tuned_lr = {e["optimizer"]: e["config"]["optimizer.lr"] for e in selected}
        arms: dict[tuple[str, float], list] = {}
        for run in load([str(workload / "defaults")]):
            if "opt/step_size" in run.metrics:
                arms.setdefault((run.optimizer, run.config["optimizer"]["c"]), []).append(run)
        for (name, c), runs in sorted(arms.items()):
            sizes = [settled_step_size(r) for r in runs]
            base = BASELINE[name]
            rows.append({"workload": workload.name, "optimizer": name, "c": c, "seeds": len(runs),
                         "step size (median)": statistics.median(sizes), "min": min(sizes), "max": max(sizes),
                         "baseline": base, "its tuned lr": tuned_lr[base],
                         "step size / its lr": statistics.median(sizes) / tuned_lr[base],
                         "forwards/step": statistics.mean(forwards_per_step(r) for r in runs)})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("study", type=Path, help="the study's runs: runs/studies/salsa")
    parser.add_argument("--out", default=None, help="write <out>.csv and <out>.md")
    args = parser.parse_args()
    write(table(args.study), args.out)


if __name__ == "__main__":
    main()
