"""``python -m research_optim.torchrun_agent ARGS`` — torchrun (``torch.distributed.run``) that ends in one line.

On SIGTERM/SIGINT torchrun's agent passes the signal on to the ranks (they checkpoint at the next step boundary and
stop), logs a warning per rank, and dies with a SignalException traceback; a failing rank ends it with a
ChildFailedError banner. The ranks already say what happened (rank 0 for all of them), so here the agent logs only
errors, and each ending is an exit code (128 + signal, or the failed rank's) and at most one line.
"""
from __future__ import annotations

import logging
import os
import sys

os.environ.setdefault("LOGLEVEL", "ERROR")  # read when torch's elastic loggers are created, i.e. on import

from torch.distributed import run as torchrun  # noqa: E402
from torch.distributed.elastic.multiprocessing.api import SignalException  # noqa: E402
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError  # noqa: E402


def main(argv: list[str]) -> int:
    logging.getLogger("torch.distributed.elastic").setLevel(logging.ERROR)  # the loggers without LOGLEVEL
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
