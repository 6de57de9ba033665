"""Where code runs: the code version and the machine, recorded with every run and in every report."""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any


def git_commit(directory: Path | None = None) -> str:
    """``<sha>`` of the repository holding the code, or ``unknown``; with uncommitted changes to tracked files
    ``<sha>+dirty.<hash of the diff>``, so two different edits of one commit read as two versions."""
    directory = directory or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True,
                             check=True, timeout=10).stdout.strip()
        diff = subprocess.run(["git", "diff", "HEAD"], cwd=directory, capture_output=True, check=True,
                              timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + (f"+dirty.{hashlib.sha256(diff).hexdigest()[:8]}" if diff else "")


def host_description() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.node()} · {platform.platform()} · {platform.processor() or platform.machine()} · "
            f"{os.cpu_count()} CPUs · {gpu} · Python {platform.python_version()} · torch {torch.__version__}")


def run_environment(device: str, world_size: int, threads: int, threads_reason: str) -> dict[str, Any]:
    """What summary.json records about where a run executed (read back by the report's provenance block): the
    host, device, number of processes, intra-op threads (and why), the load average when it started, versions."""
    import torch

    from research_optim.threads import load_average

    return {"host": socket.gethostname(), "device": device, "world_size": world_size, "threads": threads,
            "threads_reason": threads_reason, "load_average": load_average(),
            "python": platform.python_version(), "torch": torch.__version__, "commit": git_commit()}
