"""Smoke tests of the local SLURM cluster through submitit (needs `bash launch/local_slurm.sh start`).

They prove what the framework's SLURM path relies on: a submitted function's return value comes back, a crashing
job is seen as failed (by submitit and by `sacct`), and a multi-node job gets one process per task with the
SLURM rank variables that `submitit.JobEnvironment` reads. Every test is skipped, with the reason, when no cluster
answers `sinfo` (set RESEARCH_OPTIM_REQUIRE_SLURM=1 to make that a failure, as CI should).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import submitit

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(90)]

# The job process imports nothing from the tests directory (it is not on its sys.path), so the submitted
# functions below travel by value rather than as a reference to this module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

# submitit asks for SIGUSR2 90 s before the limit, and slurmctld sends it up to 30 s (its check period) earlier:
# with a 2-minute limit, any job alive at a check got it, and one got it while still importing (killed, FAILED).
# 5 minutes puts the warning at least 180 s after the start, past the 90 s test timeout.
JOB_TIMEOUT_MIN = 5


@pytest.fixture()
def executor(partitions: set[str], tmp_path: Path) -> submitit.AutoExecutor:
    # A fresh folder per test: job ids restart with each cluster start, so a reused folder could hand back
    # result pickles of an older job with the same id.
    ex = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    ex.update_parameters(timeout_min=JOB_TIMEOUT_MIN, cpus_per_task=1)
    return ex


def _final_sacct_state(job_id: str, timeout_s: float = 30.0) -> str:
    """The job's state in the accounting DB once it has left the queue.

    submitit returns as soon as the result pickle exists, which can precede SLURM's own bookkeeping by a moment.
    """
    deadline = time.monotonic() + timeout_s
    state = ""
    while time.monotonic() < deadline:
        proc = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-o", "State", "-j", job_id],
            capture_output=True, text=True, timeout=20, check=True,
        )
        state = proc.stdout.strip()
        if state and state not in {"PENDING", "RUNNING", "COMPLETING", "REQUEUED"}:
            return state
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still '{state}' in sacct after {timeout_s} s")


# ------------------------------------------------------------------------------- functions run inside jobs
def sum_of_powers(n: int, power: int) -> dict[str, object]:
    return {
        "value": sum(i**power for i in range(n)),
        "partition": os.environ.get("SLURM_JOB_PARTITION"),
        "job_id": submitit.JobEnvironment().job_id,
    }


def divide_by_zero_when_asked(message: str) -> None:
    raise ZeroDivisionError(message)


def exit_without_result(code: int) -> None:
    os._exit(code)  # a hard crash: no result pickle is written, only SLURM knows the job ended


def describe_task() -> dict[str, object]:
    env = submitit.JobEnvironment()
    return {
        "global_rank": env.global_rank,
        "local_rank": env.local_rank,
        "world_size": env.num_tasks,
        "node_rank": env.node,
        "num_nodes": env.num_nodes,
        # All simulated nodes share one host, so the SLURM node name (not the hostname) tells them apart.
        "node_name": os.environ["SLURMD_NODENAME"],
    }


# ------------------------------------------------------------------------------------------------- tests
def test_job_on_default_partition_returns_its_value(executor: submitit.AutoExecutor) -> None:
    job = executor.submit(sum_of_powers, 1000, 3)
    result = job.result()

    assert result["value"] == sum(i**3 for i in range(1000))
    assert result["job_id"] == job.job_id
    assert result["partition"], "the job saw no SLURM_JOB_PARTITION: it did not run under SLURM"
    assert _final_sacct_state(job.job_id) == "COMPLETED"


def test_job_raising_is_reported_failed(executor: submitit.AutoExecutor) -> None:
    job = executor.submit(divide_by_zero_when_asked, "deliberate failure 7319")

    with pytest.raises(submitit.core.utils.FailedJobError, match="deliberate failure 7319"):
        job.result()
    # The remote traceback comes back, and sacct (which submitit polls) sees a non-zero exit.
    assert isinstance(job.exception(), submitit.core.utils.FailedJobError)
    assert "ZeroDivisionError" in str(job.exception())
    assert _final_sacct_state(job.job_id) == "FAILED"


def test_hard_crash_is_seen_as_finished(executor: submitit.AutoExecutor) -> None:
    # Without a result pickle, submitit learns that the job ended only from sacct; without accounting it would
    # wait forever (the test timeout turns that into a failure).
    job = executor.submit(exit_without_result, 3)

    with pytest.raises(submitit.core.utils.UncompletedJobError):
        job.result()
    assert _final_sacct_state(job.job_id) == "FAILED"


def test_two_nodes_two_tasks_each(executor: submitit.AutoExecutor, partitions: set[str]) -> None:
    if "multi" not in partitions:
        pytest.skip(f"no 'multi' partition (found {sorted(partitions)}): not the launch/local_slurm.sh cluster")
    executor.update_parameters(slurm_partition="multi", nodes=2, tasks_per_node=2)
    job = executor.submit(describe_task)
    tasks = job.results()

    assert len(tasks) == 4
    assert sorted(t["global_rank"] for t in tasks) == [0, 1, 2, 3]
    assert {t["world_size"] for t in tasks} == {4}
    assert {t["num_nodes"] for t in tasks} == {2}
    by_node: dict[str, list[dict[str, object]]] = {}
    for task in tasks:
        by_node.setdefault(str(task["node_name"]), []).append(task)
    assert set(by_node) == {"n1", "n2"}
    for node_tasks in by_node.values():
        assert sorted(t["local_rank"] for t in node_tasks) == [0, 1]
        assert len({t["node_rank"] for t in node_tasks}) == 1
    assert {t["node_rank"] for t in tasks} == {0, 1}
    assert _final_sacct_state(job.job_id) == "COMPLETED"
