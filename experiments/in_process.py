"""Run command lines JOBS at a time, each Python line (``python -m MODULE ARGS``, ``python SCRIPT.py ARGS``) inside one
of JOBS long-lived Python processes (``runpy``, with ``sys.argv`` as a fresh Python would have it) instead of a fresh
Python per line; any other line runs in ``bash -c``. study.sh's tiny mode runs its pools so: a tiny run takes about a
second, a fresh Python's imports (torch, Hydra, scipy, pandas) several. Exit code 1 if any line failed, after every
line ran (as ``xargs -P``).
    printf '%s\\0' LINE... | python experiments/in_process.py --jobs 2
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import runpy
import shlex
import subprocess
import sys
import traceback
from concurrent.futures import ProcessPoolExecutor
from typing import Callable


def run_line(line: str) -> int:
    """Run one command line here (a Python module or script) or in bash (anything else); its exit code."""
    words = shlex.split(line)
    if words[:2] == ["python", "-m"] and len(words) > 2:
        code = _run_here(words[2:], lambda: runpy.run_module(words[2], run_name="__main__", alter_sys=True))
    elif words[:1] == ["python"] and len(words) > 1 and words[1].endswith(".py"):
        code = _run_here(words[1:], lambda: runpy.run_path(words[1], run_name="__main__"))
    else:
        code = subprocess.run(["bash", "-c", line]).returncode
    if code:
        print(f"exit code {code}: {line}", file=sys.stderr, flush=True)
    return code


def _run_here(argv: list[str], run: Callable[[], object]) -> int:
    """Run ``run`` with ``sys.argv`` set to ``argv``; the exit code a fresh Python would have ended with."""
    saved, sys.argv = sys.argv, argv
    try:
        run()
        return 0
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            return exit_.code or 0
        print(exit_.code, file=sys.stderr)  # sys.exit("message"): printed, exit code 1
        return 1
    except Exception:  # noqa: BLE001 — printed as a fresh Python would
        traceback.print_exc()
        return 1
    finally:
        sys.argv = saved
        sys.stdout.flush()
        sys.stderr.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2, help="lines run at once (default 2)")
    jobs = parser.parse_args().jobs
    lines = [line for line in sys.stdin.read().split("\0") if line.strip()]
    sys.path.insert(0, os.getcwd())  # as `python -m` has it (a checkout's package before an installed one); inherited
    # spawn, not fork: each worker imports for itself (no threads or locks copied mid-use); a worker outlives its line
    with ProcessPoolExecutor(max_workers=max(1, min(jobs, len(lines))),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        codes = list(pool.map(run_line, lines))
    return 1 if any(codes) else 0


if __name__ == "__main__":
    sys.exit(main())
