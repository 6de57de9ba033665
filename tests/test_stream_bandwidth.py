"""``benchmarks/stream_bandwidth.py`` (the README's read-only vs read/write streaming figures) runs and prints a
bandwidth for every pass."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # compiles the mask count


def test_every_pass_gets_a_bandwidth():
    done = subprocess.run([sys.executable, "-m", "benchmarks.stream_bandwidth", "--numel", "65536", "--rounds", "1",
                           "--repeats", "2"], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split(" | ") for line in done.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert [row[0].strip("| ") for row in rows[1:]] == [
        "read 2 (torch.dot)", "read 2 (compiled mask count)", "read 1, write 1 (copy_)", "read 2, write 1 (a += b)",
        "read 4, write 3 (fused AdamW)"]
    assert all(float(row[2]) > 0 for row in rows[1:])
    assert rows[-1][3].strip(" |") == "1.00"
