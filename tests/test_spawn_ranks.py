"""``tests.conftest.spawn_ranks``: the spawned ranks run once more when a process died of a signal (a crash inside
torch's CPU collectives), saying so with the crash's Python stack, never when a worker raised; a second crash
fails."""
from __future__ import annotations

import os
import signal

import pytest
import torch.multiprocessing as mp

from tests.conftest import spawn_ranks

pytestmark = pytest.mark.slow  # spawns processes


def _abort_on_first_attempt(rank: int, attempt: int) -> None:
    if attempt == 0 and rank == 1:
        os.abort()


def _always_abort(rank: int, attempt: int) -> None:
    if rank == 1:
        os.kill(os.getpid(), signal.SIGSEGV)


def _raise(rank: int, attempt: int) -> None:
    raise AssertionError(f"a wrong result on rank {rank}, attempt {attempt}")


def test_a_crashed_rank_runs_once_more_with_the_next_attempts_args():
    with pytest.warns(UserWarning, match=r"(?s)died.*SIGABRT.*once more.*Fatal Python error: Aborted"):
        assert spawn_ranks(_abort_on_first_attempt, lambda attempt: (attempt,)) == (1,)


def test_a_second_crash_fails():
    with pytest.warns(UserWarning, match="SIGSEGV"), pytest.raises(mp.ProcessExitedException, match="SIGSEGV"):
        spawn_ranks(_always_abort, lambda attempt: (attempt,))


def test_a_rank_that_raises_is_not_run_again():
    attempts = []
    with pytest.raises(mp.ProcessRaisedException, match="a wrong result on rank .*, attempt 0"):
        spawn_ranks(_raise, lambda attempt: attempts.append(attempt) or (attempt,))
    assert attempts == [0]
