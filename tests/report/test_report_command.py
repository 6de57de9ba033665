"""End to end: a tiny sweep run with `python -m research_optim -m`, then `python -m research_optim.report` on it.

The HTML/Markdown tables must equal numbers recomputed here straight from the metrics.jsonl files, and a point
of the sweep that diverged must be listed, not dropped.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = ["train.steps=30", "train.batch_size=16", "train.log_every=10", "train.eval_every=15",
        "train.checkpoint_every=0", "train.progress=false", "train.eval_batch_size=128"]


def _python(*args: str, env: dict | None = None, returncode: int = 0) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", **(env or {})}
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=environment,
                            timeout=300)
    assert result.returncode == returncode, result.stdout[-2000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """2 optimizers × 2 seeds, plus one point of the same sweep that diverges (SGD at lr 1e9, no clipping)."""
    root = tmp_path_factory.mktemp("runs")
    env = {"RESEARCH_OPTIM_RUNS": str(root)}
    _python("-m", "research_optim", "-m", "sweep=seeds", "run.group=tiny", "optimizer=adamw,lion", "seed=0,1",
            *TINY, env=env)
    _python("-m", "research_optim", "-m", "sweep=seeds", "run.group=tiny", "optimizer=nadamw", "optimizer.lr=1e9",
            "train.grad_clip=null", "seed=0", *TINY, env=env, returncode=1)  # a sweep with a diverged point: 1
    return root / "tiny"


@pytest.fixture(scope="module")
def report(sweep) -> tuple[Path, str]:
    result = _python("-m", "research_optim.report", str(sweep), "--out", str(sweep / "out"))
    assert "report: final table" in result.stderr  # progress is shown
    return sweep / "out", result.stdout


def _final_train_losses(sweep: Path) -> dict[str, list[float]]:
    finals: dict[str, list[float]] = {}
    for metrics in sweep.glob("*/metrics.jsonl"):
        if json.loads((metrics.parent / "summary.json").read_text())["status"] != "completed":
            continue
        lines = [json.loads(line) for line in metrics.read_text().splitlines()]
        train = [line for line in lines if line["split"] == "train"]
        finals.setdefault(metrics.parent.name.split("-")[0], []).append(max(train, key=lambda r: r["step"])["loss"])
    return finals


def _table_after(text: str, heading: str) -> list[list[str]]:
    """The first Markdown table after ``heading``: rows of cells (bold markers kept)."""
    lines = text.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        if set(line) <= set("|-"):
            continue
        table.append([c.strip() for c in line.strip("|").split("|")])
    return table


def test_the_sweep_wrote_every_point(sweep):
    names = sorted(p.name.rsplit("-", 1)[0] for p in sweep.iterdir() if (p / "config.yaml").exists())
    assert names == ["adamw-mlp-digits-s0", "adamw-mlp-digits-s1", "lion-mlp-digits-s0", "lion-mlp-digits-s1",
                     "nadamw-mlp-digits-s0"]


def test_final_loss_table_matches_metrics_files(report, sweep):
    out, _ = report
    markdown = (out / "report.md").read_text()
    finals = _final_train_losses(sweep)
    assert sorted(finals) == ["adamw", "lion"] and all(len(v) == 2 for v in finals.values())
    header, *rows = _table_after(markdown, "## Final training loss")
    by_row = {row[0]: dict(zip(header[1:], row[1:])) for row in rows}
    means = {name: sum(values) / 2 for name, values in finals.items()}
    best = min(means, key=means.get)
    for name, mean in means.items():
        cell = by_row["mlp/digits"][name]
        assert cell.strip("*") == f"{mean:.4g}"
        assert cell.startswith("**") == (name == best)  # bold best per row
        assert by_row["log average"][name].strip("*") == f"{mean:.4g}"  # one task: the log-average is the value
    assert by_row["average rank"][best] == "**1**"
    # the HTML holds the same numbers, and is self-contained (figures inlined)
    html = (out / "report.html").read_text()
    for mean in means.values():
        assert f"{mean:.4g}" in html
    figures = list((out / "figures").glob("*.png"))
    assert figures and html.count("data:image/png;base64,") == len(figures)
    assert "src=\"http" not in html


def test_speedup_table_is_against_the_baseline(report):
    out, _ = report
    markdown = (out / "report.md").read_text()
    header, *rows = _table_after(markdown, "## Speedup vs adamw")
    assert header[:3] == ["optimizer", "task", "axis"]
    assert {(r[0], r[2]) for r in rows} == {("lion", "step"), ("lion", "train_time")}
    assert all(re.fullmatch(r"\d/2", r[header.index("reached")]) for r in rows)


def test_failed_point_is_listed_not_dropped(report, sweep):
    out, stdout = report
    failed = next(p for p in sweep.iterdir() if p.name.startswith("nadamw"))
    assert f"left out (diverged): {failed}" in stdout
    markdown = (out / "report.md").read_text()
    header, *rows = _table_after(markdown, "## Runs")
    assert [(r[0], r[1]) for r in rows] == [(failed.name, "diverged")]
    assert "**1** failed, unfinished or missing" in markdown
    assert "nadamw" not in markdown.split("## Final training loss")[1].split("## Provenance")[0]


def test_provenance_block(report, sweep):
    markdown = (report[0] / "report.md").read_text()
    provenance = markdown.split("## Provenance", 1)[1]
    assert "commit `" in provenance and "Seeds: [0, 1]" in provenance
    assert "`optimizer.name` ∈" in provenance and "train.steps: 30" in provenance
    for run_dir in sweep.glob("*-s*-*"):
        assert run_dir.name.rsplit("-", 1)[1] in provenance  # every run's id (= W&B run id) is listed
