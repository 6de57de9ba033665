"""`python -m research_optim.tune cluster=slurm` on the real local SLURM cluster: worker jobs sharing one study,
and a worker preempted by SLURM's time-limit signal that requeues itself and resumes its own trial."""
from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from research_optim.jobs import sacct_states
from tests.tune.tuning import run_tune, selection, study, summary

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(420)]

SLURM = ["cluster=slurm", "cluster.partition=debug"]


def submitted(out: subprocess.CompletedProcess) -> tuple[list[str], Path]:
    assert out.returncode == 0, out.stdout + out.stderr
    jobs = re.search(r"submitted \d+ SLURM worker jobs: ([\d ]+)", out.stdout).group(1).split()
    return jobs, Path(re.search(r"logs +(\S+)", out.stdout).group(1))


def wait_for(jobs: list[str], timeout: float = 300) -> dict[str, str]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        states = sacct_states(jobs)
        if len(states) == len(jobs) and all(s not in ("PENDING", "RUNNING", "REQUEUED") for s in states.values()):
            return states
        time.sleep(2)
    raise AssertionError(f"worker jobs {jobs} did not finish: {sacct_states(jobs)}")


def test_two_worker_jobs_share_one_study(partitions, tmp_path):
    out = run_tune(tmp_path, *SLURM, "tune.workers=2", "train.steps=150", "tune.budget=5", "cluster.wait=true")
    jobs, logs = submitted(out)
    assert len(jobs) == 2 and "5 of 5 trials (5 completed, 0 diverged, 0 failed)" in out.stdout, out.stdout
    assert set(wait_for(jobs).values()) == {"COMPLETED"}
    trials = study(tmp_path / "tune").trials
    assert [t.number for t in trials] == list(range(5)) and all(t.state == TrialState.COMPLETE for t in trials)
    owners = {t.user_attrs["owner"].split()[-1] for t in trials}  # the SLURM job id ends the owner
    assert owners == set(jobs), "both jobs pulled trials"
    runs = {t.user_attrs["runs"][0] for t in trials}
    assert len(runs) == 5 and all(len(summary(run)["segments"]) == 1 for run in runs)
    assert selection(tmp_path / "tune")["selected"][0]["trials"] == 5


def test_preempted_worker_requeues_and_resumes_its_own_trial(partitions, tmp_path):
    import submitit

    args = [*SLURM, "tune.workers=1", "train.steps=2000", "train.checkpoint_every=200", "train.log_every=50",
            "tune.budget=1", "tune.confirm_seeds=[100]"]
    (job,), logs = submitted(run_tune(tmp_path, *args))
    deadline = time.time() + 240
    while not list((tmp_path / "tune").glob("*-s0-*/checkpoints/last.pt")):  # the trial is under way
        assert time.time() < deadline, "the trial never checkpointed"
        time.sleep(0.5)
    submitit.SlurmJob(logs, job)._interrupt(timeout=True)  # SIGUSR2, as before a time limit
    assert wait_for([job]) == {job: "COMPLETED"}
    log = (logs / f"{job}_0_log.out").read_text()
    assert "trial 0: taken over from" in log and "requeueing SLURM job" in (logs / f"{job}_0_log.err").read_text()
    (trial,) = study(tmp_path / "tune").trials
    assert trial.state == TrialState.COMPLETE
    segments = summary(trial.user_attrs["runs"][0])["segments"]
    assert len(segments) == 2 and segments[1]["step"] > 0, "resumed from its checkpoint"
