"""Which completed runs may be reused, by their code version (``run.reuse``).

A run directory is named by its config, not by the code that ran it, so a completed run found again would stand
for a result of other code. Each start or resume of a run records its code version in ``summary.json`` (its
``segments``: :func:`~research_optim.environment.git_commit`, ``<sha>`` or ``<sha>+dirty.<diff hash>``).

- ``run.reuse=same_code`` (default): a completed run is reused only when every segment ran the current code;
  otherwise the launch is refused, naming the versions, before anything is written.
- ``run.reuse=any``: reuse it whatever code ran it — an explicit choice; reports list every run's code version.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

POLICIES = ("same_code", "any")


def run_versions(summary: dict[str, Any]) -> list[str]:
    """The code versions a run's segments ran, in order, without repeats (``unknown`` for none recorded)."""
    versions = [str(segment.get("commit", "unknown")) for segment in summary.get("segments") or []]
    return list(dict.fromkeys(versions)) or ["unknown"]


def reuse_problem(directory: Path, summary: dict[str, Any], policy: str, current: str) -> str | None:
    """Why the completed run in ``directory`` may not be reused under ``policy`` with the code at ``current``."""
    versions = run_versions(summary)
    if policy == "any" or versions == [current]:
        return None
    return (f"run {directory} completed with code {', '.join(versions)}, but the code now is {current}: "
            "run.reuse=same_code reuses only runs of the current code. Reuse it anyway with run.reuse=any (reports "
            "list each run's code version), or move the directory away to run it again")
