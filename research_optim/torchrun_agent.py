"""``python -m research_optim.torchrun_agent ARGS`` — torchrun (``torch.distributed.run``) that forwards SLURM's
warning signal, waits for its ranks' checkpoint, and ends in one line.

What torchrun's agent does with signals (torch.distributed.elastic, read in torch 2.14): for SIGTERM, SIGINT,
SIGHUP and SIGQUIT its handler raises ``SignalException``; the agent then sends the same signal to every rank and
waits up to ``TORCH_ELASTIC_SHUTDOWN_TIMEOUT`` seconds (default 30) before SIGKILL. SIGUSR2 — SLURM's warning
before a time limit — it leaves alone, and its default action kills the agent while the ranks, started in sessions
of their own, run on unwarned. So here:

* SIGUSR2 is handled like SIGTERM: forwarded to the ranks, which checkpoint at their next step boundary and stop;
* only the first stop signal counts: SLURM signals every process of a job step and the SLURM task forwards the
  signal again, and torch's own handler would raise anew inside the agent's wait for its ranks, cutting the
  checkpoint short (the agent exits and the ranks are killed with the job step);
* the ranks already say what happened (rank 0 for all of them), so the agent logs only errors, and each ending is
  an exit code (128 + signal, or the failed rank's) and at most one line.
"""
from __future__ import annotations

import logging
import os
import signal
import sys

os.environ.setdefault("LOGLEVEL", "ERROR")  # read when torch's elastic loggers are created, i.e. on import

from torch.distributed import run as torchrun  # noqa: E402
from torch.distributed.elastic.multiprocessing import api as elastic_api  # noqa: E402
from torch.distributed.elastic.multiprocessing.api import SignalException  # noqa: E402
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError  # noqa: E402

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR2)


def _first_stop_signal(signum: int, frame: object) -> None:
    """torch's handler (raise ``SignalException``: the agent forwards the signal and waits), for the first stop
    signal only; later ones are ignored while the ranks checkpoint."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise SignalException(f"Process {os.getpid()} got signal: {signum}", sigval=signal.Signals(signum))


def main(argv: list[str]) -> int:
    logging.getLogger("torch.distributed.elastic").setLevel(logging.ERROR)  # the loggers without LOGLEVEL
    elastic_api._terminate_process_handler = _first_stop_signal  # what the agent installs when its ranks start
    for sig in STOP_SIGNALS:  # from the start (rendezvous included), and SIGUSR2, which the agent never installs
        signal.signal(sig, _first_stop_signal)
    try:
        torchrun.main(argv)
    except SignalException as err:
        return 128 + int(err.sigval)
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        print(f"torchrun: rank {rank} exited with code {failure.exitcode}", file=sys.stderr)
        return failure.exitcode if failure.exitcode > 0 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
