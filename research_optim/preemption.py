"""Preemption and time limits: a signal sets a flag; the loop checkpoints at the next step boundary and stops.

SLURM sends SIGUSR2 shortly before the time limit (submitit's ``--signal=USR2@<delay>``) and SIGTERM when a job is
preempted, cancelled or requeued; torchrun and a plain shell forward SIGTERM. Whatever the signal, every rank
stops at the same step (the flag is all-reduced), rank 0 writes the checkpoint, and the run ends with status
"preempted". After SIGUSR2 under SLURM, rank 0 requeues the job itself (``scontrol requeue``), and the requeued job
resumes from the checkpoint; after SIGTERM, SLURM (or the user) decides whether the job comes back.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)


class Preempted(Exception):
    def __init__(self, signum: int, step: int) -> None:
        self.signum, self.step = signum, step
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}; checkpoint written")


class StopFlag:
    """Catches the stop signals for the duration of a run (main thread only) and remembers the first one."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, object] = {}

    def _handler(self, signum: int, frame: object) -> None:
        if self.signum:
            return
        # remembered before the log line: a second signal (SLURM signals every process of a step, and the torchrun
        # agent forwards it again) may run this handler anew while the first one is still logging
        self.signum = signum
        log.warning("received %s: checkpointing at the next step boundary", signal.Signals(signum).name)

    def __enter__(self) -> "StopFlag":
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def agreed(self, device: torch.device) -> int:
        """The signal number every rank agrees on (the largest seen by any rank), or 0 to go on."""
        if not dist.is_initialized():
            return self.signum
        flag = torch.tensor([self.signum], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())


def requeue_slurm_job() -> bool:
    """Ask SLURM to requeue this job (rank 0, after the checkpoint). Returns whether it was requeued."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID")
    job_id = (f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}" if job
              else os.environ.get("SLURM_JOB_ID"))
    if not job_id:
        return False
    # Said before asking: SLURM may end this process as soon as the requeue is accepted, before a later line is written.
    log.warning("requeueing SLURM job %s; it will resume from the checkpoint", job_id)
    try:
        subprocess.run(["scontrol", "requeue", job_id], check=True, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        log.error("could not requeue SLURM job %s: %s", job_id, err)
        return False
    return True
