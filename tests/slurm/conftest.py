"""The local SLURM cluster as a fixture: tests skip (or, with RESEARCH_OPTIM_REQUIRE_SLURM=1, fail) without it."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def _sinfo_partitions() -> tuple[set[str] | None, str]:
    """Partitions the cluster reports, or None and why it cannot be used."""
    if shutil.which("sinfo") is None:
        return None, "sinfo not found: no SLURM client installed (start one with: bash launch/local_slurm.sh start)"
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return None, "sinfo timed out: no SLURM controller answers (bash launch/local_slurm.sh start)"
    if proc.returncode != 0:
        reason = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        return None, f"sinfo failed ({reason[0]}): start the cluster with bash launch/local_slurm.sh start"
    return {name.rstrip("*") for name in proc.stdout.split()}, ""


@pytest.fixture(scope="module")
def partitions() -> set[str]:
    found, reason = _sinfo_partitions()
    if found is None:
        # CI, which starts the cluster first, sets this so that a broken cluster fails instead of skipping.
        if os.environ.get("RESEARCH_OPTIM_REQUIRE_SLURM") == "1":
            pytest.fail(f"RESEARCH_OPTIM_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)
    return found


