"""Errors at the door: check the composed config before any process starts, data loads or file is written.

Each problem names the key, the value and what is allowed; all problems are reported together. An optimizer node
is checked by building it on a dummy parameter — its constructor's own checks are the source of truth — plus the
few values the constructors accept but no run can use (torch's optimizers take lr=0, lr=inf and momentum ≥ 1).
"""
from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, OmegaConf

from research_optim.errors import UserError
from research_optim.reuse import POLICIES
from research_optim.schedules import SCHEDULES
from research_optim.topology import planned_world_size


class ConfigError(UserError, ValueError):
    """The composed config cannot run. The message lists every problem found."""


def _num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _unusable_values(node: DictConfig, prefix: str, problems: list[str]) -> None:
    for key, value in node.items():
        path = f"{prefix}.{key}"
        if isinstance(value, DictConfig):
            _unusable_values(value, path, problems)
        elif key in ("lr", "init_step_size") and _num(value) and not 0 < value < math.inf:
            problems.append(f"{path}={value}: must be > 0 and finite")
        elif key == "momentum" and _num(value) and value >= 1:
            problems.append(f"{path}={value}: must be < 1")


def _check_optimizer(cfg: DictConfig, problems: list[str]) -> None:
    """Build the optimizer on a dummy model (a matrix and a bias: both param groups), as the run will."""
    import torch

    from research_optim.build import build_optimizer

    node = cfg.optimizer
    try:
        build_optimizer(node, torch.nn.Linear(2, 2), cfg.train.weight_decay_norm_and_bias, steps_per_epoch=1)
    except Exception as err:  # noqa: BLE001 — whatever the constructor refuses, reported as a config problem
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        problems.append(f"optimizer={node.get('name')} refuses its arguments: {reason}")
        return
    _unusable_values(node, "optimizer", problems)


def _check_model_data(cfg: DictConfig, problems: list[str]) -> None:
    accepts, kind = cfg.model.get("accepts"), cfg.data.get("kind")
    if accepts is not None and kind is not None and kind not in accepts:
        problems.append(f"model={cfg.model.name} takes {', '.join(accepts)} data, but data={cfg.data.name} is "
                        f"{kind} data: choose a model for {kind} data or another data set")


CLUSTER_KEYS = {
    "local": {"name", "launcher"},
    "torchrun": {"name", "launcher", "nproc_per_node"},
    "slurm": {"name", "launcher", "rank_launcher", "partition", "nodes", "tasks_per_node", "nproc_per_node",
              "gpus_per_node", "cpus_per_task", "mem_gb", "timeout_min", "signal_delay_s", "account", "qos",
              "constraint", "setup", "additional_parameters", "wait"},
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
        if not (_num(c.mem_gb) and c.mem_gb > 0):
            problems.append(f"cluster.mem_gb={c.mem_gb}: must be > 0")
        _check_slurm_ranks(c, problems)


def _check_slurm_ranks(c: DictConfig, problems: list[str]) -> None:
    """How the ranks of a SLURM job start, and one rank per GPU when the job asks for GPUs."""
    mode, nproc, gpus = c.get("rank_launcher", "srun"), c.get("nproc_per_node"), c.gpus_per_node
    if mode not in ("srun", "torchrun"):
        problems.append(f"cluster.rank_launcher={mode!r}: choose srun (one SLURM task per rank) or torchrun (one task "
                        "per node that starts torchrun)")
        return
    if not isinstance(gpus, int) or not isinstance(c.tasks_per_node, int):
        return  # reported above
    if mode == "srun":
        if nproc is not None:
            problems.append(f"cluster.nproc_per_node={nproc} applies to cluster.rank_launcher=torchrun only; with "
                            f"srun the ranks per node are cluster.tasks_per_node={c.tasks_per_node}")
        elif gpus > 0 and c.tasks_per_node != gpus:
            problems.append(f"cluster.tasks_per_node={c.tasks_per_node} does not match cluster.gpus_per_node={gpus}: "
                            f"one task drives one GPU, so set cluster.tasks_per_node={gpus}")
        return
    if c.tasks_per_node != 1:
        problems.append(f"cluster.rank_launcher=torchrun starts one task per node (torchrun, which starts the node's "
                        f"ranks), so the tasks must equal the nodes: set cluster.tasks_per_node=1, not "
                        f"{c.tasks_per_node} (cluster.nproc_per_node sets the ranks per node)")
    if nproc is None:
        if gpus == 0:
            problems.append("cluster.rank_launcher=torchrun on CPU nodes needs cluster.nproc_per_node (the ranks per "
                            "node; on GPU nodes it defaults to cluster.gpus_per_node)")
    elif not (isinstance(nproc, int) and not isinstance(nproc, bool) and nproc >= 1):
        problems.append(f"cluster.nproc_per_node={nproc}: must be an integer >= 1, or null for one rank per GPU")
    elif gpus > 0 and nproc != gpus:
        problems.append(f"cluster.nproc_per_node={nproc} does not match cluster.gpus_per_node={gpus}: torchrun "
                        f"starts one rank per GPU, so set cluster.nproc_per_node={gpus} (or null)")


def _check_train(cfg: DictConfig, problems: list[str]) -> None:
    t = cfg.train
    for key in ("steps", "batch_size", "eval_batch_size", "log_every", "max_consecutive_skips"):
        if not (isinstance(t[key], int) and t[key] > 0):
            problems.append(f"train.{key}={t[key]}: must be a positive integer")
    for key in ("eval_every", "checkpoint_every", "bn_recalibration_batches"):
        if not (isinstance(t[key], int) and t[key] >= 0):
            problems.append(f"train.{key}={t[key]}: must be an integer >= 0 (0 = only at the end)")
    if t.threads is not None and not (isinstance(t.threads, int) and t.threads > 0):
        problems.append(f"train.threads={t.threads}: must be a positive integer, or null to choose automatically")
    if t.micro_batch_size is not None and not (isinstance(t.micro_batch_size, int) and t.micro_batch_size > 0):
        problems.append(f"train.micro_batch_size={t.micro_batch_size}: must be a positive integer, or null for one "
                        "micro-batch (the whole per-process batch)")
    if t.peak_tflops is not None and not (_num(t.peak_tflops) and t.peak_tflops > 0):
        problems.append(f"train.peak_tflops={t.peak_tflops}: must be > 0, or null to look the device up")
    for key in ("compile_optimizer", "compile_model"):
        if not isinstance(t[key], bool):
            problems.append(f"train.{key}={t[key]!r}: must be true or false")
    if t.grad_clip is not None and not (_num(t.grad_clip) and t.grad_clip > 0):
        problems.append(f"train.grad_clip={t.grad_clip}: must be > 0, or null to disable clipping")
    allowed = {"precision": ("fp32", "bf16"), "nonfinite": ("stop", "skip"), "device": ("auto", "cpu", "cuda")}
    for key, choices in allowed.items():
        if t[key] not in choices:
            problems.append(f"train.{key}={t[key]!r}: choose one of {', '.join(choices)}")


def _check_topology(cfg: DictConfig, problems: list[str]) -> None:
    """The global batch must split evenly over the processes, and each process's part over its micro-batches (and
    into the pairs of data.mix); a CUDA run on SLURM must ask for GPUs."""
    world = planned_world_size(cfg.cluster)
    batch, micro = cfg.train.batch_size, cfg.train.micro_batch_size
    if isinstance(batch, int) and batch > 0 and world > 0 and batch % world:
        problems.append(f"train.batch_size={batch} is the global batch and must divide by the {world} processes "
                        f"of cluster={cfg.cluster.name}: choose a multiple of {world}")
    elif isinstance(batch, int) and batch > 0 and world > 0:
        per_rank = batch // world
        if isinstance(micro, int) and micro > 0 and per_rank % micro:
            divisors = [d for d in range(1, per_rank + 1) if per_rank % d == 0]
            problems.append(f"train.micro_batch_size={micro} must divide each process's batch of {per_rank} "
                            f"(train.batch_size={batch} over the {world} process{'es' if world > 1 else ''} of "
                            f"cluster={cfg.cluster.name}): choose one of {divisors}, or null")
        if cfg.data.get("mix") and per_rank % 2:
            problems.append(f"data.mix pairs the examples of each process's batch, but train.batch_size={batch} "
                            f"gives {per_rank} per process: choose a multiple of {2 * world}")
    if (cfg.cluster.launcher == "slurm" and cfg.train.device == "cuda"
            and isinstance(cfg.cluster.gpus_per_node, int) and cfg.cluster.gpus_per_node == 0):
        problems.append("train.device=cuda but cluster.gpus_per_node=0: ask for GPUs or set train.device=cpu")


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` listing every problem in ``cfg``."""
    problems: list[str] = [f"{key} is not set (???): pass {key}=..." for key in sorted(OmegaConf.missing_keys(cfg))]
    _check_train(cfg, problems)
    if cfg.schedule.name not in SCHEDULES:
        problems.append(f"schedule.name={cfg.schedule.name!r}: choose one of {', '.join(SCHEDULES)}")
    if not 0 <= cfg.schedule.final_lr_ratio <= 1:
        problems.append(f"schedule.final_lr_ratio={cfg.schedule.final_lr_ratio}: must be in [0, 1]")
    if _num(cfg.schedule.warmup_steps) and cfg.schedule.warmup_steps < 0:
        problems.append(f"schedule.warmup_steps={cfg.schedule.warmup_steps}: must be >= 0")
    if cfg.run.reuse not in POLICIES:
        problems.append(f"run.reuse={cfg.run.reuse!r}: choose one of {', '.join(POLICIES)} (which completed runs may "
                        "be reused: research_optim/reuse.py)")
    _check_model_data(cfg, problems)
    known = len(problems)
    _check_cluster(cfg.cluster, problems)
    if len(problems) == known:  # the process count is read from a cluster node that passed its checks
        _check_topology(cfg, problems)
    _check_optimizer(cfg, problems)
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
