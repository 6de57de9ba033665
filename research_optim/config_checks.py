"""Errors at the door: check the composed config before any process starts, data loads or file is written.

Each problem names the key, the value and what is allowed; all problems are reported together.
"""
from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, ListConfig

from research_optim.schedules import SCHEDULES


class ConfigError(ValueError):
    """The composed config cannot run. The message lists every problem found."""


def _num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_optimizer(node: DictConfig, problems: list[str]) -> None:
    def walk(n: DictConfig, prefix: str) -> None:
        for key, value in n.items():
            path = f"{prefix}.{key}"
            if isinstance(value, DictConfig):
                walk(value, path)
            elif key in ("lr", "init_step_size") and _num(value) and not (value > 0 and math.isfinite(value)):
                problems.append(f"{path}={value}: must be > 0")
            elif key in ("weight_decay", "eps") and _num(value) and value < 0:
                problems.append(f"{path}={value}: must be >= 0")
            elif key in ("momentum", "beta", "beta3") and _num(value) and not 0 <= value < 1:
                problems.append(f"{path}={value}: must be in [0, 1)")
            elif key == "betas" and isinstance(value, ListConfig):
                for i, b in enumerate(value):
                    if not (_num(b) and 0 <= b < 1):
                        problems.append(f"{path}[{i}]={b}: each beta must be in [0, 1)")

    walk(node, "optimizer")


def _check_model_data(cfg: DictConfig, problems: list[str]) -> None:
    accepts, kind = cfg.model.get("accepts"), cfg.data.get("kind")
    if accepts is not None and kind is not None and kind not in accepts:
        problems.append(f"model={cfg.model.name} takes {', '.join(accepts)} data, but data={cfg.data.name} is "
                        f"{kind} data: choose a model for {kind} data or another data set")


CLUSTER_KEYS = {
    "local": {"name", "launcher"},
    "torchrun": {"name", "launcher", "nproc_per_node"},
    "slurm": {"name", "launcher", "partition", "nodes", "tasks_per_node", "gpus_per_node", "cpus_per_task", "mem_gb",
              "timeout_min", "signal_delay_s", "account", "qos", "constraint", "setup", "additional_parameters",
              "wait"},
}


def _positive_int(node: DictConfig, key: str, prefix: str, problems: list[str], minimum: int = 1) -> None:
    value = node.get(key)
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= minimum):
        problems.append(f"{prefix}.{key}={value}: must be an integer >= {minimum}")


def _check_cluster(c: DictConfig, problems: list[str]) -> None:
    launcher = c.get("launcher")
    if launcher not in CLUSTER_KEYS:
        problems.append(f"cluster.launcher={launcher!r}: choose one of {', '.join(CLUSTER_KEYS)}")
        return
    unknown = sorted(set(c.keys()) - CLUSTER_KEYS[launcher])
    if unknown:
        problems.append(f"cluster={c.name} has unknown keys {unknown}; allowed: {sorted(CLUSTER_KEYS[launcher])}")
    if launcher == "torchrun":
        _positive_int(c, "nproc_per_node", "cluster", problems)
    if launcher == "slurm":
        if not c.partition:
            problems.append(f"cluster.partition is not set: cluster={c.name} needs one (`sinfo -s` lists them), "
                            "e.g. cluster.partition=gpu")
        for key in ("nodes", "tasks_per_node", "cpus_per_task", "timeout_min"):
            _positive_int(c, key, "cluster", problems)
        _positive_int(c, "gpus_per_node", "cluster", problems, minimum=0)
        _positive_int(c, "signal_delay_s", "cluster", problems, minimum=0)
        if isinstance(c.gpus_per_node, int) and c.gpus_per_node > 0 and c.tasks_per_node > c.gpus_per_node:
            problems.append(f"cluster.tasks_per_node={c.tasks_per_node} is more than cluster.gpus_per_node="
                            f"{c.gpus_per_node}: one task drives one GPU")
        if not (_num(c.mem_gb) and c.mem_gb > 0):
            problems.append(f"cluster.mem_gb={c.mem_gb}: must be > 0")


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` listing every problem in ``cfg``."""
    problems: list[str] = []
    t = cfg.train
    for key in ("steps", "batch_size", "eval_batch_size", "log_every"):
        if not (isinstance(t[key], int) and t[key] > 0):
            problems.append(f"train.{key}={t[key]}: must be a positive integer")
    for key in ("eval_every", "checkpoint_every", "bn_recalibration_batches"):
        if not (isinstance(t[key], int) and t[key] >= 0):
            problems.append(f"train.{key}={t[key]}: must be an integer >= 0 (0 = only at the end)")
    if t.grad_clip is not None and not (_num(t.grad_clip) and t.grad_clip > 0):
        problems.append(f"train.grad_clip={t.grad_clip}: must be > 0, or null to disable clipping")
    allowed = {"precision": ("fp32", "bf16"), "nonfinite": ("stop", "skip"), "device": ("auto", "cpu", "cuda")}
    for key, choices in allowed.items():
        if t[key] not in choices:
            problems.append(f"train.{key}={t[key]!r}: choose one of {', '.join(choices)}")
    if cfg.schedule.name not in SCHEDULES:
        problems.append(f"schedule.name={cfg.schedule.name!r}: choose one of {', '.join(SCHEDULES)}")
    if not 0 <= cfg.schedule.final_lr_ratio <= 1:
        problems.append(f"schedule.final_lr_ratio={cfg.schedule.final_lr_ratio}: must be in [0, 1]")
    if _num(cfg.schedule.warmup_steps) and cfg.schedule.warmup_steps < 0:
        problems.append(f"schedule.warmup_steps={cfg.schedule.warmup_steps}: must be >= 0")
    _check_optimizer(cfg.optimizer, problems)
    _check_model_data(cfg, problems)
    _check_cluster(cfg.cluster, problems)
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
