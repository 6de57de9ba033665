"""The Lion paper's rule "lr 3-10x smaller, weight decay 3-10x larger than AdamW's", read from the tuned selections.

    python experiments/lion/ratios.py runs/studies/lion/main runs/studies/lion/batch --out experiments/lion/ratios

Per task of each sweep's selection.json (python -m research_optim.tune; both optimizers searched over the same
space): the selected lr and weight decay of AdamW and Lion, the ratios AdamW / Lion (lr) and Lion / AdamW (weight
decay), and lr x wd of each (the product the rule keeps). Selected values are single tuning-seed optima: read them as
where each optimum lies, with the edge notes of selection.json, not as intervals.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere without installing

from experiments.tools import write  # noqa: E402
from research_optim.report.methods import SELECTION_FILE  # noqa: E402


def ratios(sweeps: list[Path]) -> pd.DataFrame:
    rows = []
    for sweep in sweeps:
        entries = json.loads((sweep / SELECTION_FILE).read_text())["selected"]
        by_task: dict[str, dict[str, dict]] = {}
        for entry in entries:
            by_task.setdefault(entry["task"], {})[entry["optimizer"]] = entry
        for task, chosen in sorted(by_task.items()):
            if not {"adamw", "lion"} <= set(chosen):
                continue
            adamw, lion = (chosen[name]["config"] for name in ("adamw", "lion"))
            edges = [f"{name}: {note.split(' on the ')[0]}" for name in ("adamw", "lion")
                     for note in chosen[name]["notes"] if " edge of its search space" in note]
            rows.append({"task": task, "adamw lr": adamw["optimizer.lr"], "lion lr": lion["optimizer.lr"],
                         "lr adamw/lion": adamw["optimizer.lr"] / lion["optimizer.lr"],
                         "adamw wd": adamw["optimizer.weight_decay"], "lion wd": lion["optimizer.weight_decay"],
                         "wd lion/adamw": lion["optimizer.weight_decay"] / adamw["optimizer.weight_decay"],
                         "lr·wd adamw": adamw["optimizer.lr"] * adamw["optimizer.weight_decay"],
                         "lr·wd lion": lion["optimizer.lr"] * lion["optimizer.weight_decay"],
                         "on an edge": "; ".join(edges) or "–"})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweeps", type=Path, nargs="+", help="sweep directories holding selection.json")
    parser.add_argument("--out", help="writes <out>.csv and <out>.md")
    args = parser.parse_args()
    write(ratios(args.sweeps), args.out)


if __name__ == "__main__":
    main()
