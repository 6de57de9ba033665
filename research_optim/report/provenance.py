"""Where the numbers come from: code version, configs, seeds, hardware and dates of the runs in a report."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from research_optim.report import wallclock
from research_optim.report.runs import Run, flatten
from research_optim.reuse import run_versions

# Run-level keys that name a run rather than describe the experiment (left out of the common config).
_PER_RUN_KEYS = ("seed", "run")


def run_dates(run: Run) -> tuple[str, str]:
    """Start (config.yaml written) and end (summary.json last written) of a run, ISO minutes, local time."""
    def stamp(path: Path) -> str:
        if not path.exists():
            return "–"
        return dt.datetime.fromtimestamp(path.stat().st_mtime).isoformat(timespec="minutes")

    return stamp(run.path / "config.yaml"), stamp(run.path / "summary.json")


def runs_table(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per run: label, task, seed, status, run id, device, code version(s), host, threads, load average,
    start, end, directory."""
    rows = []
    for run in sorted(runs, key=lambda r: (r.task, r.label, r.seed if r.seed is not None else -1)):
        start, end = run_dates(run)
        environment = run.summary.get("environment") or {}
        rows.append(dict(
            task=run.task, run=run.label, seed=run.seed, status=run.status, id=run.run_id,
            device=environment.get("device") or _get(run.config, "train.device"),
            code=", ".join(run_versions(run.summary)),
            host=environment.get("host", "–"), threads=environment.get("threads", "–"),
            load=wallclock.load_average(run), start=start, end=end, directory=run.path.name,
        ))
    return pd.DataFrame(rows).set_index("run") if rows else pd.DataFrame()


def code_versions(runs: Sequence[Run], current: str) -> str:
    """The code versions the runs ran, with how many runs ran each, and what a reader must know: runs of code
    other than the report's, or of uncommitted changes (``+dirty``), which no commit reproduces."""
    counts: dict[str, int] = {}
    for run in runs:
        for version in run_versions(run.summary):
            counts[version] = counts.get(version, 0) + 1
    listed = ", ".join(f"`{version}` ({n} run{'s' if n > 1 else ''})" for version, n in sorted(counts.items()))
    warnings = []
    if set(counts) - {current}:
        warnings.append(f"not all ran the report's code `{current}`")
    if any("+dirty" in version or version == "unknown" for version in [*counts, current]):
        warnings.append("uncommitted or unknown code versions are not reproducible from a commit")
    return f"Code versions of the runs: {listed or 'none'}." + (f" **Note: {'; '.join(warnings)}.**" if warnings else "")


def common_config(runs: Sequence[Run]) -> dict[str, Any]:
    """The dotted config keys with one value across all runs (the sweep's fixed settings)."""
    flats = [flatten({k: v for k, v in r.config.items() if k not in _PER_RUN_KEYS}) for r in runs]
    if not flats:
        return {}
    keys = set(flats[0]).intersection(*flats[1:])
    return {k: flats[0][k] for k in sorted(keys) if all(repr(f[k]) == repr(flats[0][k]) for f in flats)}


def varying_config(runs: Sequence[Run]) -> dict[str, list[str]]:
    """The dotted config keys whose values differ between runs, with the values seen."""
    flats = [flatten({k: v for k, v in r.config.items() if k not in ("run",)}) for r in runs]
    keys = sorted({k for f in flats for k in f})
    out = {}
    for key in keys:
        values = sorted({repr(f.get(key)) for f in flats})
        if len(values) > 1:
            out[key] = values
    return out


def _get(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node
