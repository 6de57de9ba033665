"""Errors at the door: check the composed config before any process starts, data loads or file is written.

Each problem is one line naming the key, the value and what to do; all problems are reported together. The
framework's own nodes (``train``, ``run``, ``schedule``, ``cluster``) are checked against their dataclasses
(``config_schema``), then the relations between keys. An optimizer node is checked by building it on a dummy model,
as the run will: its constructor's own checks are the source of truth, and the key it refuses is found by trying
the node without each key in turn (the constructor's default instead).
"""
from __future__ import annotations

from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from research_optim import config_schema
from research_optim.errors import UserError
from research_optim.topology import planned_world_size


class ConfigError(UserError, ValueError):
    """The composed config cannot run. The message lists every problem found."""


def _torch_refusal(optimizer: Any) -> None:
    """torch's own optimizers (built directly, or as a wrapper's ``base``) take lr=0, lr=inf and momentum=1, which
    no run can use: refused by the library's rules for every param group they hold."""
    from research_optim.optim import checks

    for torch_optimizer in (optimizer, getattr(optimizer, "base", None)):
        if type(torch_optimizer).__module__.startswith("torch.optim"):
            owner = type(torch_optimizer).__name__
            for group in torch_optimizer.param_groups:
                checks.positive(owner, "lr", group["lr"])
                if "momentum" in group:
                    checks.unit_interval(owner, "momentum", group["momentum"])


def _refusal(cfg: DictConfig) -> Callable[[DictConfig], str | None]:
    """``refusal(node)``: why the optimizer of ``node`` cannot be built on a dummy model (a matrix and a bias: both
    param groups), in the constructor's own words, or None when it can."""
    import torch
    from hydra.errors import InstantiationException

    from research_optim.build import build_optimizer

    model = torch.nn.Linear(2, 2)

    def refusal(node: DictConfig) -> str | None:
        try:
            _torch_refusal(build_optimizer(node, model, cfg.train.weight_decay_norm_and_bias, steps_per_epoch=1))
        except (ValueError, TypeError, InstantiationException) as err:
            return (str(err).strip().splitlines() or [type(err).__name__])[0]
        return None

    return refusal


def _argument_paths(node: dict[str, Any], prefix: str = "") -> list[str]:
    """The constructor arguments of an optimizer node, nested ones (a wrapper's ``base``) as ``base.lr``."""
    from research_optim.build import META_KEYS

    paths = []
    for name, value in node.items():
        if name.startswith("_") or name in META_KEYS:
            continue
        paths.append(prefix + name)
        if isinstance(value, dict):
            paths += _argument_paths(value, f"{prefix}{name}.")
    return paths


def _without(node: dict[str, Any], path: str) -> DictConfig:
    trial = OmegaConf.create(node)
    *parents, last = path.split(".")
    parent = trial
    for name in parents:
        parent = parent[name]
    del parent[last]
    return trial


def _check_optimizer(cfg: DictConfig, problems: list[str]) -> None:
    """Build the optimizer; when its constructor refuses, name the key: the first whose removal (its default
    instead) lets it build, else the first whose removal changes the refusal (a value that only fails with another,
    as SGD's momentum=1 with nesterov=true)."""
    refusal = _refusal(cfg)
    reason = refusal(cfg.optimizer)
    if reason is None:
        return
    node = OmegaConf.to_container(cfg.optimizer, resolve=True)
    without = {path: refusal(_without(node, path)) for path in _argument_paths(node)}
    blamed = [path for path, other in without.items() if other is None] or [
        path for path, other in without.items() if other != reason]
    if blamed:
        value = config_schema.shown(OmegaConf.select(OmegaConf.create(node), blamed[0]))
        problems.append(f"optimizer.{blamed[0]}={value}: {reason} (optimizer={node.get('name')} refuses it: choose "
                        "another value)")
    else:
        problems.append(f"optimizer={node.get('name')} cannot be built: {reason}")


def _check_model_data(cfg: DictConfig, problems: list[str]) -> None:
    accepts, kind = cfg.model.get("accepts"), cfg.data.get("kind")
    if accepts is not None and kind is not None and kind not in accepts:
        problems.append(f"model={cfg.model.name} takes {', '.join(accepts)} data, but data={cfg.data.name} is "
                        f"{kind} data: choose a model for {kind} data or another data set")


def _check_cluster(c: DictConfig, problems: list[str]) -> None:
    launcher = c.get("launcher")
    if launcher not in config_schema.CLUSTERS:
        problems.append(f"cluster.launcher={launcher!r}: choose one of {', '.join(config_schema.CLUSTERS)}")
        return
    config_schema.check(c, config_schema.CLUSTERS[launcher], "cluster", problems)
    if launcher == "slurm":
        if not c.get("partition"):
            problems.append(f"cluster.partition is not set: cluster={c.name} needs one (`sinfo -s` lists them), "
                            "e.g. cluster.partition=gpu")
        _check_slurm_ranks(c, problems)
        _check_slurm_warning(c, problems)


# slurmctld checks time limits every 30 s (PERIODIC_TIMEOUT) and sends the --signal warning at the first check where
# the time left is under the delay plus that period: up to 30 s early (measured on launch/local_slurm.sh: 24 s after
# the start of a 2-minute job with a 90 s delay)
SLURM_CHECK_PERIOD_S = 30
MIN_RUN_BEFORE_WARNING_S = 60


def _check_slurm_warning(c: DictConfig, problems: list[str]) -> None:
    """SIGUSR2 checkpoints and requeues the job: it must not come before the run has had time to make progress."""
    limit, delay = c.get("timeout_min"), c.get("signal_delay_s")
    if not (isinstance(limit, int) and isinstance(delay, int)):
        return  # reported by the schema check
    earliest = limit * 60 - delay - SLURM_CHECK_PERIOD_S
    if earliest < MIN_RUN_BEFORE_WARNING_S:
        enough = -(-(delay + SLURM_CHECK_PERIOD_S + MIN_RUN_BEFORE_WARNING_S) // 60)
        problems.append(f"cluster.timeout_min={limit} with cluster.signal_delay_s={delay}: SLURM may send its "
                        f"checkpoint-and-requeue warning {max(earliest, 0)} s after the start (it checks every "
                        f"{SLURM_CHECK_PERIOD_S} s), so the job would requeue before making progress; raise "
                        f"cluster.timeout_min to at least {enough} or lower cluster.signal_delay_s")


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


def _check_topology(cfg: DictConfig, problems: list[str]) -> None:
    """The global batch must split evenly over the processes, and each process's part over its micro-batches (and
    into the pairs of data.mix); a CUDA run on SLURM must ask for GPUs; a sharded run cannot compile its model."""
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
    if cfg.train.parallel == "fsdp" and cfg.train.compile_model is True and world > 1:
        # measured: dynamo compiles no graph of the sharded model (it breaks at FSDP2's hooks, which are disabled for it)
        problems.append("train.compile_model=true with train.parallel=fsdp: torch.compile stops at FSDP2's hooks, so "
                        "the model would run eagerly under a compiled run's name; set train.compile_model=false or "
                        "train.parallel=ddp")


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` listing every problem in ``cfg``."""
    problems: list[str] = [f"{key} is not set (???): pass {key}=..." for key in sorted(OmegaConf.missing_keys(cfg))]
    for group, schema in (("train", config_schema.Train), ("run", config_schema.Run),
                          ("schedule", config_schema.Schedule)):
        config_schema.check(cfg[group], schema, group, problems)
    _check_model_data(cfg, problems)
    known = len(problems)
    _check_cluster(cfg.cluster, problems)
    if len(problems) == known:  # the process count is read from a cluster node that passed its checks
        _check_topology(cfg, problems)
    _check_optimizer(cfg, problems)
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
