"""Which completed runs are reused (``run.reuse``): by default only those the current code ran; older code's runs
are refused at the door, naming both versions, unless reuse is chosen explicitly; reports list each run's code."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from research_optim.environment import git_commit
from research_optim.errors import UserError
from research_optim.report.__main__ import main as report_main

OLD = "0123456789abcdef0123456789abcdef01234567"  # a code version other than the current one


def as_if_run_by(run_dir: str | Path, version: str) -> None:
    """Record in the run's summary that ``version`` of the code ran it (what an older checkout would have written)."""
    path = Path(run_dir) / "summary.json"
    summary = json.loads(path.read_text())
    summary["segments"] = [{**segment, "commit": version} for segment in summary["segments"]]
    path.write_text(json.dumps(summary))


def test_a_completed_run_of_other_code_is_refused_unless_reuse_is_chosen(tiny_run, capsys):
    first = tiny_run()
    assert first["status"] == "completed"
    assert tiny_run()["status"] == "completed", "the current code's run is reused"
    assert "already completed" in capsys.readouterr().out
    as_if_run_by(first["run_dir"], OLD)
    before = sorted(p.name for p in Path(first["run_dir"]).iterdir())
    with pytest.raises(UserError, match=re.escape(f"completed with code {OLD}, but the code now is {git_commit()}:") + ".*run.reuse=any"):
        tiny_run()
    assert sorted(p.name for p in Path(first["run_dir"]).iterdir()) == before, "nothing written"
    again = tiny_run("run.reuse=any")
    assert again["status"] == "completed" and again["run_dir"] == first["run_dir"]
    assert json.loads((Path(first["run_dir"]) / "summary.json").read_text())["segments"][0]["commit"] == OLD


def test_an_unknown_policy_is_refused(tiny_run):
    with pytest.raises(UserError, match="run.reuse='newest': choose one of same_code, any"):
        tiny_run("run.reuse=newest")


def test_the_report_lists_each_runs_code_version_and_flags_other_code(tiny_run, tmp_path):
    runs = [tiny_run(f"seed={seed}") for seed in (0, 1)]
    as_if_run_by(runs[1]["run_dir"], OLD)
    assert report_main([str(tmp_path / "runs"), "--out", str(tmp_path / "report"), "--quiet"]) == 0
    provenance = (tmp_path / "report" / "report.md").read_text().split("## Provenance", 1)[1]
    current = git_commit()
    listed = sorted([f"`{OLD}` (1 run)", f"`{current}` (1 run)"])
    assert f"Code versions of the runs: {', '.join(listed)}." in provenance
    assert f"not all ran the report's code `{current}`" in provenance
    table = [line for line in provenance.splitlines() if line.startswith("|") and OLD in line]
    assert len(table) == 1 and "| 1 |" in table[0], "the runs table names each run's code"
