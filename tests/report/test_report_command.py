"""End to end: tiny sweeps run with `python -m research_optim -m`, then `python -m research_optim.report` on them.

The main sweep has several learning rates per optimizer on two tasks (one declaring its optimum). Every number the
report prints is recomputed here from the run directories' files: which configuration represents each optimizer,
the final table (excess loss = loss − optimum), the paired intervals and verdicts. Then the kinds of sweeps the
studies use (φ ablation, line-search variants) and the command's errors.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import yaml
from scipy import stats as scipy_stats

from research_optim.report.__main__ import main

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TINY = ["train.steps=30", "train.batch_size=16", "train.log_every=5", "train.eval_every=15",
        "train.checkpoint_every=0", "train.progress=false", "train.eval_batch_size=128"]
LAST_K = 5  # the report's default: final training value = mean of the last 5 logged windows


def _python(*args: str, env: dict | None = None, returncode: int | None = 0) -> subprocess.CompletedProcess:
    """Run ``python *args``; check its exit code unless ``returncode`` is None."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", **(env or {})}
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=environment,
                            timeout=300)
    if returncode is not None:
        assert result.returncode == returncode, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def _sweep(root: Path, *overrides: str, returncode: int = 0) -> None:
    _python("-m", "research_optim", "-m", *overrides, *TINY, env={"RESEARCH_OPTIM_RUNS": str(root)},
            returncode=returncode)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """AdamW and Lion × 2 lrs, SaLSA at its defaults, × seeds 0, 1 × tasks mlp_digits, lm_synthetic (20 runs), plus
    one point that diverges (NAdamW at lr 1e9, no clipping)."""
    root = tmp_path_factory.mktemp("runs")
    bench = ["sweep=optimizer_bench", "run.group=tiny", "seed=0,1"]
    _sweep(root, *bench, "optimizer=adamw", "optimizer.lr=1e-3,1e-2")
    _sweep(root, *bench, "optimizer=lion", "optimizer.lr=1e-4,1e-3")
    _sweep(root, *bench, "optimizer=salsa")
    _sweep(root, "sweep=seeds", "run.group=tiny", "optimizer=nadamw", "optimizer.lr=1e9", "train.grad_clip=null",
           "seed=0", returncode=1)  # a sweep with a diverged point exits 1
    return root / "tiny"


@pytest.fixture(scope="module")
def report(sweep) -> tuple[Path, str]:
    result = _python("-m", "research_optim.report", str(sweep), "--out", str(sweep / "out"))
    assert "report: final table" in result.stderr  # progress is shown
    return sweep / "out", result.stdout


# ------------------------------------------------------------------------------------- the files, by hand
def _completed_runs(sweep: Path) -> list[dict]:
    """Every completed run: optimizer, lr, seed, task, train losses and val rows, the optimum from summary.json."""
    runs = []
    for directory in sorted(p for p in sweep.iterdir() if (p / "summary.json").exists()):
        summary = json.loads((directory / "summary.json").read_text())
        if summary["status"] != "completed":
            continue
        config = yaml.safe_load((directory / "config.yaml").read_text())
        lines = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
        final = summary["final"]
        runs.append(dict(
            optimizer=config["optimizer"]["name"], lr=config["optimizer"].get("lr"), seed=config["seed"],
            task=config["task"] or f"{config['model']['name']}/{config['data']['name']}",
            train=[line["loss"] for line in sorted(lines, key=lambda r: r["step"]) if line["split"] == "train"],
            val=sorted((line for line in lines if line["split"] == "val"), key=lambda r: r["step"]),
            optimum=final["val_loss"] - final["val_gap_to_optimum"] if "val_gap_to_optimum" in final else None,
            load=summary["environment"]["load_average"][0]))
    return runs


def _chosen(runs: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """Per (task, optimizer): the runs of the lr with the lowest mean final validation loss over seeds 0, 1."""
    chosen = {}
    for key in sorted({(r["task"], r["optimizer"]) for r in runs}):
        by_lr: dict = {}
        for run in (r for r in runs if (r["task"], r["optimizer"]) == key):
            by_lr.setdefault(run["lr"], []).append(run)
        best = min(by_lr, key=lambda lr: np.mean([r["val"][-1]["loss"] for r in by_lr[lr]]))
        chosen[key] = sorted(by_lr[best], key=lambda r: r["seed"])
    return chosen


def _final(run: dict) -> float:
    """The final training value: mean of the last 5 windows, minus the optimum where the task has one."""
    return float(np.mean(run["train"][-LAST_K:])) - (run["optimum"] or 0.0)


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


def _rows(text: str, heading: str) -> dict[str, dict[str, str]]:
    header, *rows = _table_after(text, heading)
    return {row[0]: dict(zip(header[1:], row[1:])) for row in rows}


# ------------------------------------------------------------------------------------------------ the tests
def test_the_sweep_wrote_every_point(sweep):
    runs = _completed_runs(sweep)
    assert len(runs) == 20 and {r["task"] for r in runs} == {"mlp/digits", "synthetic_lm"}
    assert all(r["optimum"] is not None for r in runs if r["task"] == "synthetic_lm")


def test_each_optimizer_is_one_column_represented_by_its_best_lr_on_validation(report, sweep):
    markdown = (report[0] / "report.md").read_text()
    header, *rows = _table_after(markdown, "## Methods and configurations")
    table = {(row[header.index("task")], row[0]): dict(zip(header, row)) for row in rows}
    chosen = _chosen(_completed_runs(sweep))
    for (task, optimizer), runs in chosen.items():
        row = table[(task, optimizer)]
        if optimizer == "salsa":
            assert (row["status"], row["configuration"], row["tried"]) == ("default", "–", "1")
        else:
            assert (row["status"], row["configuration"], row["tried"]) == ("tuned", f"lr={runs[0]['lr']:g}", "2")
            assert "validation" in row["rule"]
        assert row["seeds"] == "0, 1"
    assert table[("mlp/digits", "nadamw")]["notes"] == "1 of 1 runs failed, diverged or did not finish"
    assert "**Tuned methods are compared with untuned ones.**" in markdown
    sensitivity = _rows(markdown, "## Learning-rate sensitivity")  # the first task's table: mlp/digits
    for optimizer in ("adamw", "lion"):
        assert sensitivity[optimizer]["compared"] == f"{chosen[('mlp/digits', optimizer)][0]['lr']:g}"


def test_final_table_recomputed_from_the_metrics_files(report, sweep):
    markdown = (report[0] / "report.md").read_text()
    rows = _rows(markdown, "## Final training loss")
    chosen = _chosen(_completed_runs(sweep))
    means = {key: np.mean([_final(r) for r in runs]) for key, runs in chosen.items()}
    for (task, optimizer), mean in means.items():
        label = "synthetic_lm (excess)" if task == "synthetic_lm" else task  # excess loss = loss − optimum
        status = "default" if optimizer == "salsa" else "tuned"
        best = min(m for (t, _), m in means.items() if t == task)
        cell = rows[label][f"{optimizer} ({status})"]
        assert cell.strip("*") == f"{mean:.4g}" and cell.startswith("**") == (mean == best)
    # No "–" where data exist; the diverged NAdamW is a column of "–" that ranks last.
    for label in ("mlp/digits", "synthetic_lm (excess)", "log average"):
        assert [v for k, v in rows[label].items() if "–" in v] == (["–"] if label != "log average" else ["–"])
        assert rows[label]["nadamw (fixed)"] == "–"
    assert rows["average rank"]["nadamw (fixed)"] == "4"
    # The HTML holds the same numbers and is self-contained (figures inlined).
    html = (report[0] / "report.html").read_text()
    assert all(f"{mean:.4g}" in html for mean in means.values())
    figures = list((report[0] / "figures").glob("*.png"))
    assert figures and html.count("data:image/png;base64,") == len(figures) and 'src="http' not in html


def test_paired_intervals_and_verdicts_recomputed(report, sweep):
    markdown = (report[0] / "report.md").read_text()
    header, *rows = _table_after(markdown, "## Comparison with adamw")
    table = {(row[0], row[1]): dict(zip(header, row)) for row in rows}
    assert set(table) == {(m, t) for m in ("lion", "salsa") for t in ("mlp/digits", "synthetic_lm")}
    chosen = _chosen(_completed_runs(sweep))
    t = scipy_stats.t.ppf(0.975, 1)
    # Times are compared only at load averages within 0.5 of each other (one host, device and thread count here).
    spread = {task: np.ptp([r["load"] for (k, _), runs in chosen.items() if k == task for r in runs])
              for task, _ in chosen}
    for (method, task), row in table.items():
        differences = [_final(m) - _final(b) for m, b in zip(chosen[(task, method)], chosen[(task, "adamw")])]
        mean, half = np.mean(differences), t * np.std(differences, ddof=1) / math.sqrt(2)
        assert row["seeds"] == "2"
        assert row["Δ final [95% CI]"] == f"{mean:+.4g} [{mean - half:+.4g}, {mean + half:+.4g}]"
        verdict = "worse" if mean - half > 0 else "better" if mean + half < 0 else "indistinguishable"
        assert row["final"] == verdict
        assert {"steps speedup", "forward passes speedup"} <= set(row)  # SaLSA runs: the forward-pass axis
        assert ("train wall-clock speedup" in row) == (spread[task] <= 0.5)
    if any(value > 0.5 for value in spread.values()):
        assert "wall-clock not comparable: measured at different loads" in markdown


def test_curves_show_validation_beside_training(report):
    figures = report[0] / "figures"
    for task in ("mlp_digits", "synthetic_lm"):
        height, width, _ = matplotlib.image.imread(figures / f"curves_{task}.png").shape
        assert width / height > 3  # three panels: training and validation vs step, training vs forward passes
    markdown = (report[0] / "report.md").read_text()
    assert "log axis of the gap to the task's optimum" in markdown


def test_failed_point_is_listed_not_dropped(report, sweep):
    out, stdout = report
    failed = next(p for p in sweep.iterdir() if p.name.startswith("nadamw"))
    assert f"left out (diverged): {failed}" in stdout
    markdown = (out / "report.md").read_text()
    header, *rows = _table_after(markdown, "## Runs")
    assert [(r[0], r[1]) for r in rows] == [(failed.name, "diverged")]
    assert "**1** failed, unfinished or missing" in markdown


def test_provenance_block(report, sweep):
    markdown = (report[0] / "report.md").read_text()
    provenance = markdown.split("## Provenance", 1)[1]
    assert "commit `" in provenance and "Seeds: [0, 1]" in provenance
    assert "`optimizer.name` ∈" in provenance and "train.steps: 30" in provenance
    for run_dir in sweep.glob("*-s*-*"):
        assert run_dir.name.rsplit("-", 1)[1] in provenance  # every run's id (= W&B run id) is listed


def test_validation_claims_and_another_baseline(sweep, tmp_path):
    _python("-m", "research_optim.report", str(sweep), "--out", str(tmp_path), "--split", "val", "--baseline",
            "lion", "--quiet")
    markdown = (tmp_path / "report.md").read_text()
    rows = _rows(markdown, "## Final validation loss")
    chosen = _chosen(_completed_runs(sweep))
    adamw = np.mean([r["val"][-1]["loss"] for r in chosen[("mlp/digits", "adamw")]])
    assert rows["mlp/digits"]["adamw (tuned)"].strip("*") == f"{adamw:.4g}"
    lm = np.mean([r["val"][-1]["gap_to_optimum"] for r in chosen[("synthetic_lm", "adamw")]])
    assert rows["synthetic_lm (excess)"]["adamw (tuned)"].strip("*") == f"{lm:.4g}"  # the logged gap
    assert "## Comparison with lion" in markdown


def test_test_split_leaves_out_a_task_without_one(tmp_path):
    """digits has no test split: the test report compares the tasks that have one (lr sensitivity included)."""
    _sweep(tmp_path, "run.group=g", "optimizer.lr=1e-3,1e-2")
    _sweep(tmp_path, "run.group=g", "optimizer.lr=1e-3,1e-2", "experiment=teacher_student", "model.hidden=16",
           "data.optimum_samples=4096", "data.num_val=256", "data.num_test=256")
    _python("-m", "research_optim.report", str(tmp_path / "g"), "--out", str(tmp_path / "out"), "--split", "test",
            "--quiet")
    markdown = (tmp_path / "out" / "report.md").read_text()
    sensitivity = markdown.split("## Learning-rate sensitivity", 1)[1].split("\n## ", 1)[0]
    assert "teacher_student: learning rates per optimizer" in sensitivity and "mlp/digits:" not in sensitivity


def test_command_errors_are_one_line_and_write_nothing(sweep, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    result = _python("-m", "research_optim.report", str(tmp_path / "empty"), "--out", str(out), returncode=None)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"error: no runs under {tmp_path / 'empty'} (a run directory holds config.yaml)\n"
    cases = [  # the same entry point, in this process
        (["--baseline", "adamw lr=0.001"], "is not a method of this report; methods: adamw, lion, salsa"),
        (["--method-keys", "optimizer.lr"],
         "choose the baseline with --baseline, one of: adamw lr=0.001, adamw lr=0.01"),
        (["--metric", "perplexity"], "no run logged 'perplexity' on the 'train' split; logged: "),
        (["--selection", str(tmp_path / "missing.json")], "no such file"),
        (["--method-keys", "optimizer.phi"], "--method-keys: no run has the config key 'optimizer.phi'"),
        (["--select-split", "test"], "--select-split test: the test split is held out to be reported"),
    ]
    for arguments, message in cases:
        assert main([str(sweep), *arguments, "--out", str(out), "--quiet"]) == 2
        captured = capsys.readouterr()
        assert message in captured.err and len(captured.err.strip().splitlines()) == 1, captured.err
        assert not out.exists()


# ------------------------------------------------------------------------- the kinds of sweeps studies run
def test_phi_ablation_per_phi_methods_against_a_named_baseline(tmp_path):
    _sweep(tmp_path, "sweep=phi_ablation", "run.group=phi", "optimizer.base=lib_adamw,lion",
           "optimizer.phi=indicator_mean,soft", "seed=0,1")
    source, out = tmp_path / "phi", tmp_path / "report"
    # Two bases, no adamw: the baseline must be named.
    result = _python("-m", "research_optim.report", str(source), "--quiet", returncode=None)
    assert result.returncode == 2 and "one of: cautious base=lib_adamw, cautious base=lion" in result.stderr
    _python("-m", "research_optim.report", str(source), "--out", str(out), "--quiet", "--method-keys",
            "optimizer.base", "optimizer.phi", "--baseline", "cautious base=lib_adamw phi=indicator_mean")
    markdown = (out / "report.md").read_text()
    header, *rows = _table_after(markdown, "## Comparison with cautious base=lib_adamw phi=indicator_mean")
    assert sorted(row[0] for row in rows) == ["cautious base=lib_adamw phi=soft",
                                              "cautious base=lion phi=indicator_mean", "cautious base=lion phi=soft"]
    assert all(row[header.index("seeds")] == "2" for row in rows)
    assert (out / "figures" / "grid_mlp_digits_cautious.png").exists()  # base × φ heatmap: every configuration


def test_line_search_variants_compared_on_forward_passes(tmp_path):
    _sweep(tmp_path, "sweep=line_search_ablation", "run.group=ls", "line_search.variant=default,c_low", "seed=0,1")
    out = tmp_path / "report"
    _python("-m", "research_optim.report", str(tmp_path / "ls"), "--out", str(out), "--quiet", "--method-keys",
            "line_search.variant", "--baseline", "salsa line_search.variant=default")
    markdown = (out / "report.md").read_text()
    rows = _rows(markdown, "## Comparison with salsa line_search.variant=default")
    (row,) = rows.values()
    assert "forward passes speedup" in row and row["seeds"] == "2"
    methods = _rows(markdown, "## Methods and configurations")
    assert methods["salsa line_search.variant=default"]["status"] == "default"
    assert methods["salsa line_search.variant=c_low"]["status"] == "fixed"  # c = 0.3: not the package default
