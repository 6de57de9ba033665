"""Small command-line helpers the studies' run.sh scripts share, built on ``research_optim.report``.

    python experiments/tools.py best runs/cautious/digits_lr adamw            # prints the best lr (lowest loss)
    python experiments/tools.py speedup runs/x --pairs c_adamw:adamw --out experiments/cautious/speedup
    python experiments/tools.py finals runs/x --out experiments/salsa/table   # SaLSA-paper layout
    python experiments/tools.py sweep runs/x --param lr --out experiments/lion/lr_sweep
    python experiments/tools.py settings runs/cautious/phi --out experiments/cautious/phi_ablation

Every table is written as ``<out>.csv`` and ``<out>.md`` and printed. Runs are labelled by optimizer name only
(the studies put one setting per optimizer in a "tuned" group), so tables compare optimizers, not settings.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from research_optim.report import analysis  # noqa: E402
from research_optim.report.runs import Run, load_runs  # noqa: E402


def by_optimizer(run: Run) -> str:
    return run.optimizer


def markdown(frame: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub table without the tabulate dependency."""
    frame = frame.reset_index() if not isinstance(frame.index, pd.RangeIndex) else frame

    def cell(value: object) -> str:
        if isinstance(value, float):
            return "nan" if math.isnan(value) else f"{value:.{digits}g}"
        return str(value)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write(frame: pd.DataFrame, out: str | None) -> None:
    text = markdown(frame)
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(f"{out}.csv")
        Path(f"{out}.md").write_text(text)


def load(sources: list[str]) -> list[Run]:
    runset = load_runs(sources, progress=False)
    for problem in runset.problems:  # diverged runs are results too: say so instead of hiding them
        print(f"# left out ({problem.status}): {problem.path}", file=sys.stderr)
    return runset.runs


def best(args: argparse.Namespace) -> None:
    """The value of ``--param`` with the lowest mean final loss for one optimizer (diverged runs never win)."""
    runs = [r for r in load([args.source]) if r.optimizer == args.optimizer]
    if not runs:
        raise SystemExit(f"no completed {args.optimizer} run under {args.source}")
    table = analysis.sensitivity(runs, args.param, split=args.split, last_k=args.last_k)
    print(table.sort_values("mean").iloc[0][args.param])


def speedup(args: argparse.Namespace) -> None:
    """Steps-to-target speedup of each method over its baseline (paired by seed) and the final-loss gap vs spread."""
    runs = load(args.sources)
    rows = []
    for pair in args.pairs:
        method, baseline = pair.split(":")
        chosen = [r for r in runs if r.optimizer in (method, baseline)]
        table = analysis.speedup_vs_baseline(chosen, baseline, split=args.split, last_k=args.last_k,
                                             axes=("step",), label=by_optimizer)
        finals = analysis.final_values(chosen, split=args.split, last_k=args.last_k, label=by_optimizer)
        for (task, name, _axis), row in table.iterrows():
            per = finals[finals.task == task].groupby("optimizer")["value"]
            mean, std = per.mean(), per.std()
            gap = mean[baseline] - mean[name]
            rows.append(dict(task=task, method=name, baseline=baseline,
                             speedup_mean=row["mean"], speedup_std=row["std"], speedup_min=row["min"],
                             speedup_max=row["max"], seeds=int(row["n"]), reached=int(row["n_reached"]),
                             final_method=mean[name], final_method_std=std[name],
                             final_baseline=mean[baseline], final_baseline_std=std[baseline],
                             gap_exceeds_spread=abs(gap) > std[name] + std[baseline]))
    write(pd.DataFrame(rows), args.out)


def finals(args: argparse.Namespace) -> None:
    """The SaLSA paper's layout: final loss per task × optimizer (mean over seeds), log average, average rank."""
    runs = load(args.sources)
    mean = analysis.final_loss_table(runs, split=args.split, last_k=args.last_k, label=by_optimizer)
    std = analysis.final_loss_table(runs, split=args.split, last_k=args.last_k, label=by_optimizer, agg="std")
    count = analysis.final_loss_table(runs, split=args.split, last_k=args.last_k, label=by_optimizer, agg="count")
    table = pd.concat([mean, analysis.log_average(mean).to_frame().T, analysis.average_rank(mean).to_frame().T])
    table.index.name = "task"
    write(table, args.out)
    write(std.rename(index=lambda t: f"{t} (std over {int(count.loc[t].min())}–{int(count.loc[t].max())} seeds)"),
          f"{args.out}_std" if args.out else None)


def sweep(args: argparse.Namespace) -> None:
    """Final loss against one hyperparameter, per optimizer (mean, std, n over seeds)."""
    runs = load(args.sources)
    write(analysis.sensitivity(runs, args.param, split=args.split, last_k=args.last_k), args.out)


def settings(args: argparse.Namespace) -> None:
    """Final loss per run label (optimizer + its varying hyperparameters): mean, std, n over seeds."""
    values = analysis.final_values(load(args.sources), split=args.split, last_k=args.last_k)
    table = values.groupby(["task", "optimizer"])["value"].agg(["mean", "std", "count"]).rename(columns={"count": "n"})
    write(table.sort_values("mean").reset_index(), args.out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name, func, many=True):
        p = sub.add_parser(name)
        p.set_defaults(func=func)
        p.add_argument("--split", default="train", help="train (per-window batch loss) or val")
        p.add_argument("--last-k", type=int, default=5, help="final value = mean of the last K logged values")
        if many:
            p.add_argument("sources", nargs="+")
            p.add_argument("--out")
        return p

    p = add("best", best, many=False)
    p.add_argument("source")
    p.add_argument("optimizer")
    p.add_argument("--param", default="lr")
    add("speedup", speedup).add_argument("--pairs", nargs="+", required=True, help="method:baseline")
    add("finals", finals)
    add("sweep", sweep).add_argument("--param", default="lr")
    add("settings", settings)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
