"""Where code runs: the code version and the machine, recorded with every run and in every report."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any


def git_commit(directory: Path | None = None) -> str:
    """``<sha>`` (``+dirty`` when the tree has changes) of the repository holding the code, or ``unknown``."""
    directory = directory or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True,
                             check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=directory,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def host_description() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.node()} · {platform.platform()} · {platform.processor() or platform.machine()} · "
            f"{os.cpu_count()} CPUs · {gpu} · Python {platform.python_version()} · torch {torch.__version__}")


def run_environment(device: str, world_size: int) -> dict[str, Any]:
    """What summary.json records about where a run executed (read back by the report's provenance block)."""
    import torch

    return {"host": socket.gethostname(), "device": device, "world_size": world_size,
            "python": platform.python_version(), "torch": torch.__version__, "commit": git_commit()}
