"""Where metrics go: always a local ``metrics.jsonl`` (+ ``summary.json``); W&B mirrors it from rank 0.

W&B is a convenience, never a point of failure: no credentials or no server means offline mode, and any W&B error
after start-up is logged once and W&B is switched off for the rest of the run; the local files are unaffected.
"""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"


class MetricsFile:
    """Append-only JSON lines. On (re)start, lines past the restored step are dropped: they will be redone."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def records(self) -> list[dict[str, Any]]:
        """Every complete line (a process killed mid-write can leave a partial last line: it is skipped)."""
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def truncate_after(self, step: int) -> None:
        """Keep the lines up to ``step`` (0, a fresh start: none)."""
        if not self.path.exists():
            return
        kept = [r for r in self.records() if 0 < r["step"] <= step]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r, allow_nan=True) + "\n" for r in kept))
        os.replace(tmp, self.path)

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record, allow_nan=True) + "\n")


def write_summary(path: Path, status: str, final: dict[str, Any], error: str | None = None,
                  environment: dict[str, Any] | None = None, segments: list[dict[str, Any]] | None = None) -> None:
    """summary.json: status, error, final numbers, where it ran, and the code version of each segment of the run."""
    tmp = path.with_suffix(".tmp")
    summary = {"status": status, "error": error, "final": final, "environment": environment or {},
               "segments": segments or []}
    tmp.write_text(json.dumps(summary, indent=2, allow_nan=True))
    os.replace(tmp, path)


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """The one reader of a run directory's summary.json (:func:`write_summary`): None when the run has none yet;
    ``ValueError`` naming the file when it is not a JSON object."""
    path = Path(run_dir) / SUMMARY_FILE
    if not path.exists():
        return None
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(summary, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return summary


def _wandb_mode(requested: str) -> str:
    if requested in ("online", "offline"):
        return requested
    has_key = bool(os.environ.get("WANDB_API_KEY")) or Path.home().joinpath(".netrc").exists()
    return "online" if has_key and os.environ.get("WANDB_MODE") != "offline" else "offline"


X_AXES = ("step", "examples", "train_time")


def wandb_tags(cfg: DictConfig) -> list[str]:
    """The run's W&B tags: the configured ones plus ``optimizer:``, ``task:`` and, where they apply, ``phi:`` (the
    cautious mask: ``optimizer.phi`` of ``optimizer=cautious`` or ``optimizer.cautious`` of the others),
    and ``base:`` (the cautious base), so runs filter by any of them. The sweep is the W&B group (``run.group``)."""
    node = cfg.optimizer
    phi = node.get("phi") if "phi" in node else node.get("cautious")
    tags = {*map(str, cfg.logger.get("tags", [])), *map(str, cfg.run.tags), f"optimizer:{node.name}",
            f"task:{cfg.task or f'{cfg.model.name}/{cfg.data.name}'}"}
    if phi:
        tags.add(f"phi:{phi}")
    if node.get("base") is not None and isinstance(node.get("base"), str):
        tags.add(f"base:{node.base}")
    return sorted(tags)


class WandbRun:
    """A thin, fail-safe wrapper around one wandb run (rank 0 only)."""

    def __init__(self, cfg: DictConfig, run_id: str, run_dir: Path) -> None:
        import wandb

        self._wandb = wandb
        node = cfg.logger
        init = dict(
            project=node.project, entity=node.entity, id=run_id, resume="allow", dir=str(run_dir),
            name=run_dir.name, group=str(cfg.run.group), job_type=str(node.job_type), tags=wandb_tags(cfg),
            config=OmegaConf.to_container(cfg, resolve=True),
        )
        mode = _wandb_mode(node.mode)
        try:
            self.run = wandb.init(mode=mode, **init)
        except Exception as err:  # server unreachable, bad credentials, ...
            if mode == "offline":
                raise
            log.warning("W&B online start failed (%s); continuing offline", err)
            self.run = wandb.init(mode="offline", **init)
        # Every train/* and val/* metric is plotted against `step` by default; `examples` and `train_time` are
        # logged on the same rows, so the UI (and the report) can switch the x axis to either.
        self.run.define_metric("step")
        for axis in X_AXES[1:]:
            self.run.define_metric(axis, step_metric="step")
        for split in ("train", "val"):
            self.run.define_metric(f"{split}/*", step_metric="step")
            self.run.define_metric(f"{split}/loss", step_metric="step", summary="min,last")
        log.info("W&B run %s (%s mode) in %s", run_id, mode, self.run.dir)

    def log(self, record: dict[str, Any]) -> None:
        split = record.get("split", "train")
        data = {f"{split}/{k}" if k not in ("step", "examples", "tokens", "train_time", "eval_time") else k: v
                for k, v in record.items() if k != "split" and not (isinstance(v, float) and math.isnan(v))}
        self.run.log(data)

    def summary(self, final: dict[str, Any]) -> None:
        self.run.summary.update(final)

    def finish(self, exit_code: int = 0) -> None:
        self.run.finish(exit_code=exit_code)


class Tracker:
    """The loop's single logging sink. Non-zero ranks hold a Tracker that writes nothing.

    ``start`` opens the run (metrics truncated to the restored step, summary "running", W&B); ``finish`` may be
    called without ``start`` — a run that fails while resuming still leaves a summary saying so.
    """

    def __init__(self, cfg: DictConfig, run_id: str, run_dir: Path, is_main: bool) -> None:
        self.cfg, self.run_id, self.run_dir, self.is_main = cfg, run_id, run_dir, is_main
        self.metrics = MetricsFile(run_dir / "metrics.jsonl")
        self.summary_path = run_dir / SUMMARY_FILE
        self.wandb: WandbRun | None = None
        self.environment: dict[str, Any] = {}
        self.segments: list[dict[str, Any]] = []

    def _mirror(self, fn: str, *args: Any) -> None:
        if self.wandb is None:
            return
        try:
            getattr(self.wandb, fn)(*args)
        except Exception as err:
            log.warning("W&B %s failed (%s); W&B disabled for the rest of the run", fn, err)
            self.wandb = None

    def start(self, restored_step: int, environment: dict[str, Any], segments: list[dict[str, Any]]) -> None:
        self.environment, self.segments = environment, segments
        if not self.is_main:
            return
        self.metrics.truncate_after(restored_step)
        write_summary(self.summary_path, "running", {}, environment=environment, segments=segments)
        if self.cfg.logger.name == "wandb":
            try:
                self.wandb = WandbRun(self.cfg, self.run_id, self.run_dir)
            except Exception as err:
                log.warning("W&B disabled for this run: %s", err)

    def log(self, record: dict[str, Any]) -> None:
        if not self.is_main:
            return
        self.metrics.write(record)
        self._mirror("log", record)

    def finish(self, status: str, final: dict[str, Any], error: str | None = None) -> None:
        if not self.is_main:
            return
        write_summary(self.summary_path, status, final, error, self.environment, self.segments)
        self._mirror("summary", final)
        self._mirror("finish", 0 if status == "completed" else 1)
