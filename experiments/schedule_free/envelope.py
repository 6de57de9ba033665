"""Schedule-Free's claim, one run against the envelope: SF-AdamW's single run (tuned at the longest horizon) at
step H against AdamW + cosine tuned for horizon H, for every H; paired by seed with a 95% Student-t interval.

    python experiments/schedule_free/envelope.py runs/studies/schedule_free --workload teacher_student \
        --horizons 750 1500 3000 --out experiments/schedule_free/envelope_teacher_student

Both sides are the configurations selection.json names (python -m research_optim.tune), on their confirmation
seeds: cosine on task <workload>_h<H> (its final validation value), Schedule-Free on task <workload>_h<H_max>
(its validation value at step H, evaluated at x). Δ = SF − cosine per seed; for loss "better" means Δ < 0.
Writes <out>.md and <out>.csv and prints the table.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from research_optim.report import stats
from research_optim.report.document import Table
from research_optim.report.analysis import higher_is_better, run_final
from research_optim.report.methods import SELECTION_FILE, choose_methods, read_selection
from research_optim.report.markdown import table_markdown
from research_optim.report.runs import load_runs


def envelope(sweep: Path, workload: str, horizons: list[int], metric: str) -> pd.DataFrame:
    runset = load_runs(sweep, progress=False)
    methods = choose_methods(runset.runs, [p.run for p in runset.problems if p.run is not None],
                             selection=read_selection(sweep / SELECTION_FILE))
    chosen = {(m.task, m.name): m for m in methods}

    def method(task: str, name: str):
        if (task, name) not in chosen:
            raise SystemExit(f"{sweep}: no {name} runs on task {task} (run experiments/schedule_free/run.sh)")
        return {run.seed: run for run in chosen[(task, name)].runs}

    sf = method(f"{workload}_h{max(horizons)}", "sf_adamw")
    rows = []
    for horizon in horizons:
        cosine = method(f"{workload}_h{horizon}", "adamw")
        seeds = sorted(set(sf) & set(cosine))
        at_h = [float(sf[s].curve(metric, "val").get(horizon, float("nan"))) for s in seeds]
        finals = [run_final(cosine[s], metric, "val") for s in seeds]
        delta = stats.t_interval([a - b for a, b in zip(at_h, finals)])
        rows.append({"horizon": horizon, "seeds": len(seeds),
                     f"cosine tuned for H: val {metric}": sum(finals) / len(finals),
                     f"SF at step H: val {metric}": sum(at_h) / len(at_h), "Δ SF − cosine": delta.mean,
                     "95% CI": f"[{delta.low:+.4g}, {delta.high:+.4g}]",
                     "verdict (SF)": stats.verdict(delta, higher_is_better(metric))})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path, help="the sweep directory holding both studies and selection.json")
    parser.add_argument("--workload", required=True, help="task prefix: tasks are <workload>_h<H>")
    parser.add_argument("--horizons", type=int, nargs="+", required=True)
    parser.add_argument("--metric", default="loss")
    parser.add_argument("--out", required=True, help="writes <out>.md and <out>.csv")
    args = parser.parse_args()
    table = envelope(args.sweep, args.workload, sorted(args.horizons), args.metric)
    text = table_markdown(Table(table, index=False))
    print(text)
    Path(f"{args.out}.md").write_text(text + "\n")
    table.to_csv(f"{args.out}.csv", index=False)


if __name__ == "__main__":
    main()
