"""Read runs back from W&B (when online) into the local run-directory layout, so one loader serves both.

Each W&B run becomes ``<cache>/<group>/<name>/`` with ``config.yaml`` (its config, with ``run.id``),
``metrics.jsonl`` (its history, ``train/*`` and ``val/*`` keys split back into rows with ``split``) and
``summary.json`` (status from the W&B state: finished → completed, crashed/failed/killed → failed).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from research_optim.tracking import X_AXES

SPLITS = ("train", "val")
_STATE = {"finished": "completed", "crashed": "failed", "failed": "failed", "killed": "failed",
          "running": "running", "preempted": "running"}


def history_to_records(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """W&B history rows (``step``, ``examples``, ``train_time``, ``train/loss``, ``val/loss``...) → metrics lines."""
    records = []
    for row in rows:
        shared = {k: row[k] for k in (*X_AXES, "tokens", "eval_time") if row.get(k) is not None}
        if "step" not in shared:
            continue
        for split in SPLITS:
            values = {k[len(split) + 1:]: v for k, v in row.items() if k.startswith(f"{split}/") and v is not None}
            if values:
                records.append({**shared, "split": split, **values})
    return records


def write_run(run: Any, cache: Path) -> Path:
    """Mirror one ``wandb.apis.public.Run`` (or anything with the same attributes) into ``cache``."""
    config = dict(run.config)
    config.setdefault("run", {})
    if isinstance(config["run"], dict):
        config["run"]["id"] = run.id
    group = getattr(run, "group", None) or "ungrouped"
    directory = cache / str(group) / str(run.name)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    records = history_to_records(run.scan_history())
    (directory / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    status = _STATE.get(str(run.state), str(run.state))
    error = None if status == "completed" else f"W&B state {run.state}"
    summary = {k: v for k, v in dict(run.summary).items() if not str(k).startswith("_")}
    (directory / "summary.json").write_text(json.dumps({"status": status, "error": error, "final": summary},
                                                       default=str))
    return directory


def download_runs(path: str, cache: Path, api: Any = None, progress: bool = True) -> Path:
    """``ENTITY/PROJECT[/GROUP]`` → the cache directory holding every run (of that group) in the local layout."""
    parts = path.strip("/").split("/")
    if len(parts) not in (2, 3):
        raise ValueError(f"W&B source must be ENTITY/PROJECT[/GROUP], got {path!r}")
    if api is None:
        import wandb

        api = wandb.Api()
    filters = {"group": parts[2]} if len(parts) == 3 else None
    runs = list(api.runs(f"{parts[0]}/{parts[1]}", filters=filters))
    iterator: Iterable[Any] = runs
    if progress and runs:
        from tqdm.auto import tqdm

        iterator = tqdm(runs, desc="downloading W&B runs", unit="run")
    for run in iterator:
        write_run(run, cache)
    return cache
