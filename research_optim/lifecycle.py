"""A run's life on disk: already completed?, the lock, the checkpoint to resume from, and how each way a run ends
becomes its status in summary.json and the outcome returned to the caller.

* completed — the final numbers; a completed run launched again (``run.resume``) returns them without training;
* diverged (:class:`Diverged`) — a result too: written with the reason and returned;
* preempted (:class:`~research_optim.preemption.Preempted`) — checkpointed; after SIGUSR2 on SLURM, requeued;
* anything else — written as "failed" with the reason, then raised again.
"""
from __future__ import annotations

import logging
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from research_optim import checkpoint, distributed
from research_optim.errors import UserError
from research_optim.preemption import Preempted, requeue_slurm_job
from research_optim.run_dir import RunLock
from research_optim.topology import check_resumable
from research_optim.tracking import Tracker, read_summary

log = logging.getLogger("research_optim")


class Diverged(RuntimeError):
    """The run cannot go on: a non-finite loss, too many skipped steps, or non-finite parameters/state."""


def outcome(directory: Path, status: str, final: dict[str, Any], error: str | None = None) -> dict[str, Any]:
    """What a run returns to its caller: summary.json's status, error and final numbers, and where the run is."""
    return {"status": status, "error": error, **final, "run_dir": str(directory)}


def recorded_outcome(directory: Path) -> dict[str, Any] | None:
    """The outcome summary.json records (None when the run wrote none)."""
    summary = read_summary(directory)
    return None if summary is None else outcome(directory, summary["status"], summary["final"], summary.get("error"))


def already_completed(directory: Path) -> dict[str, Any] | None:
    done = recorded_outcome(directory)
    return done if done is not None and done["status"] == "completed" else None


@contextmanager
def locked(directory: Path, is_main: bool) -> Iterator[None]:
    """Rank 0 creates the run directory and holds its lock (one process per run directory) until the run ends."""
    lock = RunLock(directory)
    if is_main:
        directory.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    distributed.barrier()
    try:
        yield
    finally:
        lock.release()


def checkpoint_to_resume(ckpt_dir: Path, resume: bool, topology: dict[str, Any],
                         is_main: bool) -> checkpoint.Restored | None:
    """The newest readable checkpoint (``run.resume``), or None to start over.

    A damaged ``last.pt`` falls back to ``prev.pt`` with a warning; no readable checkpoint at all, or one written on
    another topology, refuses with what to do. Starting over (``run.resume=false``) deletes the previous checkpoints.
    """
    if is_main:
        checkpoint.remove_stale_temp_files(ckpt_dir)
    if not resume:
        if is_main and (deleted := checkpoint.discard(ckpt_dir)):
            log.warning("run.resume=false: starting over, deleted %s", ", ".join(p.name for p in deleted))
        return None
    found = checkpoint.newest_readable(ckpt_dir)
    distributed.barrier()  # every rank has read it before rank 0 moves a damaged last.pt aside
    if found is None:
        return None
    check_resumable(found.checkpoint.get("topology"), topology, str(found.path))
    if found.passed_over and is_main:
        aside = checkpoint.set_damaged_aside(ckpt_dir)
        log.warning("%s; resuming from the previous checkpoint %s%s", found.passed_over, found.path,
                    f" (the damaged file is kept as {aside}; delete it when done)" if aside else "")
    return found


def run_to_end(train: Callable[[], dict[str, Any]], tracker: Tracker, directory: Path,
               progress: Callable[[], dict[str, int]], is_main: bool) -> dict[str, Any]:
    """Run ``train`` (it returns the final numbers) and record how it ended, in summary.json and the outcome;
    ``progress`` says how far the run got (the step, the skipped steps) when it did not complete."""
    try:
        final = train()
    except Diverged as err:
        log.error("%s", err)
        tracker.finish("diverged", progress(), str(err))
        return outcome(directory, "diverged", progress(), str(err))
    except Preempted as err:
        log.warning("%s", err)
        tracker.finish("preempted", progress(), str(err))
        requeued = is_main and err.signum == signal.SIGUSR2 and requeue_slurm_job()
        return {**outcome(directory, "preempted", progress(), str(err)), "requeued": requeued}
    except BaseException as err:
        tracker.finish("failed", progress(), str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}")
        raise
    tracker.finish("completed", final)
    return outcome(directory, "completed", final)
