"""The studies' scripts (experiments/<study>/): each run.sh end to end in its tiny mode (every tune command, analysis
and report of the study, on tiny workloads), and each paper_scale.sh dry run — every paper-scale study checked
here (tune.dry_run), and a tiny version of the first one run as a SLURM job on the local cluster; and
experiments/in_process.py, which runs the tiny modes' command lines in long-lived Python processes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ["cautious", "schedule_free", "salsa", "lion"]


def script(path: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    result = subprocess.run(["bash", str(ROOT / path)], cwd=ROOT, capture_output=True, text=True, timeout=1800,
                            env={**os.environ, "RESEARCH_OPTIM_RUNS": str(tmp_path), **env})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 30-40 tiny runs and a few reports: a minute or two on 2 idle cores, far more under load
@pytest.mark.parametrize("study", STUDIES)
def test_run_sh_tiny_mode_runs_the_whole_protocol(study, tmp_path):
    out = script(f"experiments/{study}/run.sh", tmp_path, STUDY_TINY="1").stdout
    selections = list((tmp_path / "studies" / study).rglob("selection.json"))
    assert selections and all(e["seeds"] == [100, 101] for s in selections
                              for e in json.loads(s.read_text())["selected"])
    reports = list((tmp_path / study / "out").glob("report_*/report.md"))
    assert reports and all("## Provenance" in r.read_text() for r in reports)
    assert "Markdown report" in out


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("study", STUDIES)
def test_paper_scale_dry_run_checks_every_study_and_submits_a_tiny_one(study, partitions, tmp_path):
    out = script(f"experiments/{study}/paper_scale.sh", tmp_path, PAPER_DRY="1").stdout
    assert "estimate " in out and "GPU-h" in out
    checked = [line for line in out.splitlines() if line.startswith("dry run  study ")]
    assert checked and all("on SLURM partition gpu" in line and "cuda" in line for line in checked)
    assert "submitted 1 SLURM worker jobs" in out and "(1 completed, 0 diverged, 0 failed)" in out
    assert "confirm  seeds 100: 1 completed" in out


@pytest.mark.slow
def test_in_process_runs_every_line_in_one_long_lived_process_each_with_its_own_exit_code(tmp_path):
    script = tmp_path / "line.py"  # run as a script and as a module
    script.write_text("import os, sys\nprint('pid', os.getpid(), sys.argv[1:], flush=True)\n"
                      "if sys.argv[1] == 'raise':\n    raise ValueError('boom')\n"
                      "sys.exit(int(sys.argv[1]) if sys.argv[1].isdigit() else sys.argv[1])\n")
    lines = [f"python {script} 0 'a b'", "python -m line 3", f"python {script} raise", "echo bash $$",
             "python -m line 'a message'", "python -m line 0"]
    # `python -m line` finds line.py in the current directory, as a fresh `python -m` would
    result = subprocess.run([sys.executable, str(ROOT / "experiments/in_process.py"), "--jobs", "1"],
                            input="\0".join(lines), cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env={key: value for key, value in os.environ.items() if key != "PYTHONPATH"})
    assert result.returncode == 1, result.stderr
    out = result.stdout.splitlines()
    python_pids = {line.split()[1] for line in out if line.startswith("pid ")}
    bash_pids = {line.split()[1] for line in out if line.startswith("bash ")}
    assert len([line for line in out if line.startswith("pid ")]) == 5 and len(python_pids) == 1  # every line ran
    assert bash_pids and not bash_pids & python_pids  # a line that is not Python runs in bash
    assert f"pid {next(iter(python_pids))} ['0', 'a b']" in out  # the shell's quoting
    failed = [line for line in result.stderr.splitlines() if line.startswith("exit code ")]
    assert failed == [f"exit code 3: {lines[1]}", f"exit code 1: {lines[2]}", f"exit code 1: {lines[4]}"], failed
    assert "ValueError: boom" in result.stderr and "\na message\n" in result.stderr
