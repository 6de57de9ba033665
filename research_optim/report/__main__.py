"""``python -m research_optim.report SOURCE``: an HTML + Markdown report of a sweep (and optionally a W&B Report).

SOURCE is a directory holding run directories (``runs/<sweep>``, any depth) or ``wandb:ENTITY/PROJECT[/GROUP]``
(read through the W&B API; needs credentials and network). Each method (an optimizer on a task) is represented by
one configuration: the one a selection file names (SOURCE/selection.json, or --selection), else the best on the
validation split; every method is compared with the baseline, paired by seed, with 95% intervals and verdicts.
docs/reports.md describes every section.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from research_optim.report import ReportError
from research_optim.report.build import WANDB_PREFIX, is_wandb_source, report
from research_optim.report.methods import DEFAULT_METHOD_KEYS, SELECTION_FILE, read_selection
from research_optim.report.runs import TEST_SPLIT
from research_optim.report.sections import Options
from research_optim.report.stats import METHODS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m research_optim.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help=f"run directory tree, or {WANDB_PREFIX}ENTITY/PROJECT[/GROUP]")
    parser.add_argument("--out", type=Path, help="output directory (default: SOURCE/report, or ./report-<group>)")
    parser.add_argument("--title", help="report title (default: the source's name)")
    parser.add_argument("--metric", default="loss",
                        help="metric compared (default loss; shown as excess loss on tasks that log their optimum)")
    parser.add_argument("--split", default="train", help="split the tables and comparisons use (default train)")
    parser.add_argument("--baseline", help="method every other is compared with (default adamw when present; "
                                           "required when there are several methods and no adamw)")
    parser.add_argument("--method-keys", nargs="+", default=list(DEFAULT_METHOD_KEYS), metavar="KEY",
                        help="config keys that, with optimizer.name, make a method (default: optimizer.base); "
                             "e.g. optimizer.phi to compare every φ")
    parser.add_argument("--selection", type=Path,
                        help=f"selection file naming each method's configuration (default: SOURCE/{SELECTION_FILE} "
                             "when it exists)")
    parser.add_argument("--select-split", default="val",
                        help="split on which the best configuration is chosen without a selection file (default val; "
                             "never test)")
    parser.add_argument("--interval", choices=METHODS, default="t", help="95%% interval over seeds (default t)")
    parser.add_argument("--last-k", type=_positive, default=5,
                        help="training values: final value and smoothing = mean of the last K logged windows "
                             "(default 5)")
    parser.add_argument("--wandb", action="store_true", help="also build a W&B Report (saved when online)")
    parser.add_argument("--entity", help="W&B entity of the Report (default: the runs' logger.entity)")
    parser.add_argument("--project", help="W&B project of the Report (default: the runs' logger.project)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return _report(args)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _report(args: argparse.Namespace) -> int:
    name = args.source.rstrip("/").split("/")[-1]
    wandb_source = is_wandb_source(args.source)
    out = args.out or (Path(f"report-{name}") if wandb_source else Path(args.source) / "report")
    selection_path = args.selection or (None if wandb_source else Path(args.source) / SELECTION_FILE)
    if args.selection is not None and not args.selection.is_file():
        raise ReportError(f"--selection {args.selection}: no such file")
    if args.select_split == TEST_SPLIT:
        raise ReportError("--select-split test: the test split is held out to be reported (--split test), never to "
                          "choose a configuration; select on val")
    options = Options(title=args.title or f"Optimizer report: {name}", source=args.source, baseline=args.baseline,
                      metric=args.metric, split=args.split, select_split=args.select_split, last_k=args.last_k,
                      method_keys=tuple(args.method_keys), interval=args.interval,
                      selection=read_selection(selection_path) if selection_path and selection_path.is_file()
                      else None)
    written = report(args.source, out, options, progress=not args.quiet)
    print(f"HTML report      {written.html}")
    print(f"Markdown report  {written.markdown}")
    for problem in written.runset.problems:
        print(f"left out ({problem.status}): {problem.path}  {problem.error or ''}".rstrip())
    if args.wandb:
        from research_optim.report.wandb_report import publish

        print(publish(written.document, written.study, entity=args.entity, project=args.project))
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())
