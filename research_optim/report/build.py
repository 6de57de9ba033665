"""SOURCE → report files: load the runs (local directory or W&B), build the document, write HTML + Markdown."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from research_optim.report import ReportError
from research_optim.report.document import Document
from research_optim.report.html import render_html
from research_optim.report.markdown import FIGURE_DIR, render_markdown
from research_optim.report.runs import RunSet, load_runs
from research_optim.report.sections import Options, Study, build_document, prepare

log = logging.getLogger(__name__)

WANDB_PREFIX = "wandb:"


@dataclass
class Written:
    html: Path
    markdown: Path
    document: Document
    study: Study

    @property
    def runset(self) -> RunSet:
        return self.study.runset


def is_wandb_source(source: str) -> bool:
    """``wandb:ENTITY/PROJECT[/GROUP]`` names W&B runs; anything else is a local directory."""
    return source.startswith(WANDB_PREFIX)


def load_source(source: str, cache: Path, progress: bool = True) -> RunSet:
    """The runs of ``source``; W&B runs are first mirrored into ``cache`` in the local run-directory layout."""
    if is_wandb_source(source):
        from research_optim.report.wandb_source import download_runs

        directory = download_runs(source[len(WANDB_PREFIX):], cache, progress=progress)
        return load_runs(directory, progress=progress)
    return load_runs(source, progress=progress)


def write_report(document: Document, study: Study, out: Path) -> Written:
    """``out/report.html`` (self-contained) and ``out/report.md`` with its PNGs in ``out/figures/``."""
    out.mkdir(parents=True, exist_ok=True)
    figures = out / FIGURE_DIR
    figures.mkdir(exist_ok=True)
    for old in figures.glob("*.png"):  # a re-run with fewer figures must not leave stale ones behind
        old.unlink()
    for figure in document.figures():
        (figures / f"{figure.name}.png").write_bytes(figure.png)
    html_path, md_path = out / "report.html", out / "report.md"
    html_path.write_text(render_html(document))
    md_path.write_text(render_markdown(document))
    return Written(html_path, md_path, document, study)


def report(source: str, out: Path, options: Options, progress: bool = True) -> Written:
    """Load ``source``, check the options against its runs (:class:`ReportError` before anything is written),
    build the document and write it to ``out``."""
    runset = load_source(source, out / "wandb_runs", progress)
    if not runset.runs and not runset.problems:
        raise ReportError(f"no runs under {source} (a run directory holds config.yaml)")

    def say(message: str) -> None:
        if progress:
            print(message, file=sys.stderr, flush=True)

    say(f"report: {len(runset.runs)} completed runs, {len(runset.problems)} problems")
    study = prepare(runset, options)
    document = build_document(study, progress=say)
    return write_report(document, study, out)
