"""``python -m research_optim.report SOURCE``: an HTML + Markdown report of a sweep (and optionally a W&B Report).

SOURCE is a directory holding run directories (``runs/<sweep>``, any depth) or ``wandb:ENTITY/PROJECT[/GROUP]``
(read through the W&B API; needs credentials and network).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from research_optim.report.build import WANDB_PREFIX, is_wandb_source, report
from research_optim.report.sections import Options


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m research_optim.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help=f"run directory tree, or {WANDB_PREFIX}ENTITY/PROJECT[/GROUP]")
    parser.add_argument("--out", type=Path, help="output directory (default: SOURCE/report, or ./report-<group>)")
    parser.add_argument("--title", help="report title (default: the source's name)")
    parser.add_argument("--baseline", help="run label the speedups and profile targets refer to (default: adamw)")
    parser.add_argument("--last-k", type=int, default=1, help="final value = mean of the last K logged values")
    parser.add_argument("--wandb", action="store_true", help="also build a W&B Report (saved when online)")
    parser.add_argument("--entity", help="W&B entity of the Report (default: the runs' logger.entity)")
    parser.add_argument("--project", help="W&B project of the Report (default: the runs' logger.project)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    name = args.source.rstrip("/").split("/")[-1]
    out = args.out or (Path(f"report-{name}") if is_wandb_source(args.source) else Path(args.source) / "report")
    options = Options(title=args.title or f"Optimizer report: {name}", source=args.source, baseline=args.baseline,
                      last_k=args.last_k)
    written = report(args.source, out, options, progress=not args.quiet)
    print(f"HTML report      {written.html}")
    print(f"Markdown report  {written.markdown}")
    for problem in written.runset.problems:
        print(f"left out ({problem.status}): {problem.path}  {problem.error or ''}".rstrip())
    if args.wandb:
        from research_optim.report.wandb_report import publish

        print(publish(written.document, written.runset, entity=args.entity, project=args.project))
    return 0


if __name__ == "__main__":
    sys.exit(main())
