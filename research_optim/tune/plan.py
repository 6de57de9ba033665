"""One tuning study, read from the composed ``tune`` config and checked at the door, before anything runs.

Refused in one message listing every problem, with nothing written: a bad ``tune.*`` value (budget 0, unknown
sampler, tuning and confirmation seeds that overlap), a search space that cannot be sampled (unknown key, empty,
bad range), a task without a validation split held out from its training data, a SLURM worker of more than one
process, a configuration a corner of the space makes invalid (each optimizer is built at every bound), and a
changed space that leaves out earlier trials of the same study (a study's space can only widen), and earlier
trials whose runs ran other code than the current (unless ``run.reuse=any``).
"""
from __future__ import annotations

import functools
import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from research_optim.config_checks import ConfigError, validate
from research_optim.dispatch import absolute_root
from research_optim.environment import git_commit
from research_optim.errors import UserError
from research_optim.preflight import preflight
from research_optim.report.runs import task_name
from research_optim.reuse import reuse_problem, run_versions
from research_optim.run_dir import run_id
from research_optim.topology import planned_world_size, with_resolved_device
from research_optim.tracking import read_summary
from research_optim.tune.sampler import SAMPLERS
from research_optim.tune.space import SearchSpace, describe
from research_optim.tune.study import Study

METRICS = {"loss": "minimize", "accuracy": "maximize"}
TUNE_KEYS = {"budget", "sampler", "sampler_seed", "seeds", "confirm_seeds", "metric", "edge", "workers", "method_keys",
             "dry_run"}


class TuneError(UserError, ValueError):
    """The tuning command cannot start; the message lists every problem."""


@dataclass
class Plan:
    base: DictConfig            # the run config every trial starts from (no tune/search_space; device resolved)
    space: SearchSpace
    budget: int
    sampler: str
    sampler_seed: int
    seeds: list[int]
    confirm_seeds: list[int]
    metric: str
    edge: float
    workers: int
    method_keys: list[str]      # config keys that, with the optimizer's name, make a method (one selection each)
    dry_run: bool               # check and describe the study; run and submit nothing
    tune_config: DictConfig     # the composed config (tune and search_space included), for SLURM workers

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "Plan":
        node = cfg.tune
        problems = _tune_problems(node)
        base = cfg.copy()
        with open_dict(base):
            del base["tune"], base["search_space"]
        problems += _validation_problems(base.data) + _cluster_problems(base.cluster)
        space = SearchSpace.from_config(cfg.search_space, base, problems)
        if problems:
            raise TuneError("cannot tune:\n  - " + "\n  - ".join(problems))
        plan = cls(absolute_root(with_resolved_device(base)), space, node.budget, node.sampler, node.sampler_seed,
                   list(node.seeds), list(node.confirm_seeds), node.metric, node.edge, node.workers,
                   list(node.method_keys), node.dry_run, cfg)
        plan.check_corners()
        if not plan.dry_run:  # a dry run checks the config alone: not this machine's partitions and files
            preflight(plan.config(space.corners()[0], plan.seeds[0]))  # the partition exists, run.root is writable
        plan.check_widening()
        plan.check_reuse()
        return plan

    # ------------------------------------------------------------------ what a trial is
    def config(self, params: dict[str, Any], seed: int) -> DictConfig:
        """The run config of a trial with ``params`` on ``seed``."""
        cfg = self.space.apply(self.base, params)
        cfg.seed = seed
        return cfg

    def worker_config(self) -> DictConfig:
        """The tune config a SLURM worker job starts from: the device and run.root resolved here."""
        cfg = self.tune_config.copy()
        cfg.train.device, cfg.run.root = self.base.train.device, self.base.run.root
        return cfg

    def describe(self) -> str:
        """What the study would run: its trials and runs, the space, where."""
        runs = self.budget * len(self.seeds) + len(self.confirm_seeds)
        cluster = self.base.cluster
        where = (f"SLURM partition {cluster.partition}, {self.workers} worker jobs"
                 if cluster.launcher == "slurm" else f"cluster={cluster.name}")
        return (f"dry run  study {self.study.name}: {self.budget} trials x {len(self.seeds)} tuning seed(s) + "
                f"{len(self.confirm_seeds)} confirmation seeds = {runs} runs of {self.base.train.steps} steps "
                f"(batch {self.base.train.batch_size}, {self.base.model.name} on {self.base.data.name}, "
                f"{self.base.train.device}) on {where}\n         search space: "
                f"{'; '.join(f'{d.name} {d.describe()}' for d in self.space.dimensions)}\n         nothing run or submitted")

    @property
    def direction(self) -> str:
        return METRICS[self.metric]

    @property
    def worst(self) -> float:
        """The value of a diverged trial: it counts as tried, and ranks last."""
        return math.inf if self.direction == "minimize" else -math.inf

    @property
    def task(self) -> str:
        return task_name(OmegaConf.to_container(self.base, resolve=True))

    @property
    def sweep_dir(self) -> Path:
        return Path(self.base.run.root).resolve() / str(self.base.run.group)

    @functools.cached_property
    def study(self) -> Study:
        """The study of this optimizer on this task: its name carries a hash of everything trials share (the
        config with the searched keys and the seed masked, the metric and the tuning seeds), so changing any of
        those starts a new study, while widening the space or the budget continues this one."""
        masked = self.space.masked(self.base)
        masked.seed = None
        key = hashlib.sha256(f"{run_id(masked)}|{self.metric}|{self.seeds}".encode()).hexdigest()[:10]
        label = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{self.base.optimizer.name}-{self.task}")
        return Study(self.sweep_dir, f"{label}-{key}", self.direction)

    @property
    def study_seed(self) -> int:
        """The sampler's seed: ``tune.sampler_seed`` and the study (two studies never share Sobol points)."""
        return int(hashlib.sha256(f"{self.sampler_seed}|{self.study.name}".encode()).hexdigest()[:8], 16)

    # ------------------------------------------------------------------ checks at the door
    def check_corners(self) -> None:
        """Every bound and choice of the space must make a valid config (the optimizer is built at each)."""
        for params in self.space.corners():
            try:
                validate(self.config(params, self.seeds[0]))
            except ConfigError as err:
                raise TuneError(f"the search space reaches an invalid config at {self.space.describe(params)}: "
                                f"{err}") from None

    def check_widening(self) -> None:
        """An existing study continues only with the same dimensions, each holding every earlier trial's value."""
        trials = [t for t in self.study.trials() if t.params]
        if not trials:
            return
        dims = {dim.name: dim for dim in self.space.dimensions}
        problems = [f"search_space.{name}: not a dimension of this study (its dimensions: "
                    f"{', '.join(sorted(trials[0].params))})" for name in sorted(set(dims) - set(trials[0].params))]
        for name in sorted({name for t in trials for name in t.params}):
            dim = dims.get(name)
            if dim is None:
                problems.append(f"search_space.{name}: the study's trials sampled it, this space has no such dimension")
                continue
            earlier = {t.distributions[name] for t in trials if name in t.params}
            outside = [t for t in trials if not dim.holds(t.params.get(name, dim.low))]
            if any(not dim.same_kind(dist) for dist in earlier):
                problems.append(f"search_space.{name}: {dim.describe()} is not the kind of range the study sampled "
                                f"({', '.join(sorted(map(describe, earlier)))})")
            elif outside:
                values = sorted(t.params[name] for t in outside)
                problems.append(f"search_space.{name}: {dim.describe()} leaves out {len(outside)} earlier trial(s) "
                                f"({name} from {values[0]:.4g} to {values[-1]:.4g}: trials "
                                f"{', '.join(str(t.number) for t in outside)})")
        if problems:
            raise TuneError(f"study {self.study.name} ({self.study.journal}) cannot continue with this search "
                            "space — a study's space can only widen (another run.group starts a new study):\n  - "
                            + "\n  - ".join(problems))


    def check_reuse(self) -> None:
        """The study's finished trials count only if their runs may be reused (``run.reuse``): their values came
        from those runs."""
        current, problems = git_commit(), []
        for trial in self.study.trials():
            for directory in trial.user_attrs.get("runs", []):
                summary = read_summary(Path(directory))
                if (summary and summary.get("status") in ("completed", "diverged")
                        and reuse_problem(Path(directory), summary, self.base.run.reuse, current)):
                    problems.append(f"trial {trial.number}: {directory} ran {', '.join(run_versions(summary))}")
        if problems:
            raise TuneError(f"study {self.study.name} ({self.study.journal}) holds trials whose runs ran other code "
                            f"than the current {current}:\n  - " + "\n  - ".join(problems) + "\nrun.reuse=any "
                            "keeps them (reports list each run's code version); another run.group starts afresh")


def _tune_problems(node: DictConfig) -> list[str]:
    problems = [f"tune.{key}: unknown key (known: {', '.join(sorted(TUNE_KEYS))})"
                for key in sorted(set(node) - TUNE_KEYS)]
    for key in ("budget", "workers"):
        if not _is_int(node.get(key)) or node[key] < 1:
            problems.append(f"tune.{key}={node.get(key)}: must be an integer >= 1")
    if not (isinstance(node.get("edge"), (int, float)) and 0 <= node.edge < 0.5):
        problems.append(f"tune.edge={node.get('edge')}: must be a fraction in [0, 0.5)")
    keys = node.get("method_keys")
    if not (OmegaConf.is_list(keys) and all(isinstance(k, str) for k in keys)):
        problems.append(f"tune.method_keys={keys}: must be a list of config keys (e.g. [optimizer.base, optimizer.phi])")
    if not isinstance(node.get("dry_run"), bool):
        problems.append(f"tune.dry_run={node.get('dry_run')}: must be true or false")
    if not _is_int(node.get("sampler_seed")):
        problems.append(f"tune.sampler_seed={node.get('sampler_seed')}: must be an integer")
    if node.get("sampler") not in SAMPLERS:
        problems.append(f"tune.sampler={node.get('sampler')!r}: choose one of {', '.join(SAMPLERS)}")
    if node.get("metric") not in METRICS:
        problems.append(f"tune.metric={node.get('metric')!r}: choose one of {', '.join(METRICS)} (on the "
                        "validation split)")
    seeds = {}
    for key in ("seeds", "confirm_seeds"):
        value = node.get(key)
        if not (OmegaConf.is_list(value) and len(value) and all(_is_int(s) for s in value)
                and len(set(value)) == len(value)):
            problems.append(f"tune.{key}={value}: must be a non-empty list of distinct integers")
        else:
            seeds[key] = set(value)
    if len(seeds) == 2 and seeds["seeds"] & seeds["confirm_seeds"]:
        problems.append(f"tune.confirm_seeds shares {sorted(seeds['seeds'] & seeds['confirm_seeds'])} with "
                        "tune.seeds: confirmation needs fresh seeds, or the selection bias stays in the result")
    return problems


def _validation_problems(data: DictConfig) -> list[str]:
    """Selection needs a validation split held out from the training data — never the test split."""
    val_split = data.get("val_split")
    if val_split is not None and val_split in ("test", data.get("test_split")):
        return [f"data.val_split={val_split}: this is the test split; tuning selects on a validation split held "
                f"out from the training data (data.val_split=null holds out data.val_fraction of it)"]
    for key in ("val_fraction", "num_val"):
        value = data.get(key)
        if value is not None and not (value > 0 and (key != "val_fraction" or value < 1)):
            return [f"data.{key}={value}: data={data.name} then has no validation split, and tuning selects on "
                    f"one (held out from the training data); set data.{key} "
                    f"{'in (0, 1)' if key == 'val_fraction' else '>= 1'}"]
    return []


def _cluster_problems(cluster: DictConfig) -> list[str]:
    if cluster.get("launcher") == "slurm" and planned_world_size(cluster) != 1:
        return [f"cluster={cluster.name} starts {planned_world_size(cluster)} processes per job; a tuning worker "
                "is one SLURM job of one process that runs trials one after another (cluster.nodes=1, "
                "cluster.tasks_per_node=1; tune.workers jobs run in parallel)"]
    return []


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
