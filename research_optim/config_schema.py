"""The shape of the framework's own config nodes — ``train``, ``run``, ``schedule`` and ``cluster`` — as dataclasses:
each key with its type, its default (the value in conf/; a test holds them equal) and its range.

:func:`check` reports every unknown key, wrong type and out-of-range value of a node as one line naming the key.
Relations between keys (a batch that splits over the processes, SLURM's ranks per GPU) are checked in
``config_checks``; the optimizer's values by its own constructor.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from omegaconf import DictConfig, ListConfig, OmegaConf

from research_optim.reuse import POLICIES
from research_optim.schedules import SCHEDULES


def key(default: Any, *, low: float | None = None, high: float | None = None, above: float | None = None,
        null: str | None = None) -> Any:
    """A field: ``low``/``high`` bound the value (inclusive), ``above`` from below (exclusive); ``null`` says what
    null means for an optional key."""
    bounds = {"low": low, "high": high, "above": above, "null": null}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=bounds)
    return dataclasses.field(default=default, metadata=bounds)


@dataclass
class Train:
    steps: int = key(3000, low=1)
    batch_size: int = key(64, low=1)
    micro_batch_size: int | None = key(None, low=1, null="one micro-batch: the whole per-process batch")
    parallel: Literal["ddp", "fsdp"] = "ddp"
    eval_every: int = key(500, low=0)
    eval_batch_size: int = key(512, low=1)
    log_every: int = key(25, low=1)
    checkpoint_every: int = key(1000, low=0)
    grad_clip: float | None = key(1.0, above=0, null="no clipping")
    precision: Literal["fp32", "bf16"] = "fp32"
    weight_decay_norm_and_bias: bool = False
    nonfinite: Literal["stop", "skip"] = "stop"
    max_consecutive_skips: int = key(10, low=1)
    bn_recalibration_batches: int = key(50, low=0)
    compile_optimizer: bool = True
    compile_model: bool = False
    peak_tflops: float | None = key(None, above=0, null="looked up for known GPUs")
    progress: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = key(None, low=1, null="chosen from the CPUs allotted and the model size")


@dataclass
class Run:
    root: str = "runs"  # conf/: ${oc.env:RESEARCH_OPTIM_RUNS,runs}
    group: str = "default"
    resume: bool = True
    reuse: Literal[POLICIES] = "same_code"  # type: ignore[valid-type]  # research_optim/reuse.py
    tags: list = key([])


@dataclass
class Schedule:
    name: Literal[SCHEDULES] = "cosine"  # type: ignore[valid-type]
    warmup_steps: float = key(0.05, low=0)
    final_lr_ratio: float = key(0.0, low=0, high=1)


@dataclass
class LocalCluster:
    name: str = "local"
    launcher: Literal["local"] = "local"


@dataclass
class TorchrunCluster:
    name: str = "torchrun"
    launcher: Literal["torchrun"] = "torchrun"
    nproc_per_node: int = key(2, low=1)


@dataclass
class SlurmCluster:
    name: str = "slurm"
    launcher: Literal["slurm"] = "slurm"
    rank_launcher: Literal["srun", "torchrun"] = "srun"
    partition: str | None = None  # required: config_checks says so, with how to list them
    nodes: int = key(1, low=1)
    tasks_per_node: int = key(1, low=1)
    nproc_per_node: int | None = key(None, low=1, null="one rank per GPU")
    gpus_per_node: int = key(0, low=0)
    cpus_per_task: int = key(1, low=1)
    mem_gb: float = key(4, above=0)
    timeout_min: int = key(60, low=1)
    signal_delay_s: int = key(90, low=0)
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    setup: list = key([])
    additional_parameters: dict = key({})
    wait: bool = False


CLUSTERS = {"local": LocalCluster, "torchrun": TorchrunCluster, "slurm": SlurmCluster}


def shown(value: Any) -> str:
    """A value as the command line writes it: 'fp8', true, null, [0.9, 1.0]."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return repr(value) if isinstance(value, str) else str(value)


def _matches(value: Any, hint: Any) -> bool:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if typing.get_origin(hint) is Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is list:
        return isinstance(value, (list, ListConfig))
    if hint is dict:
        return isinstance(value, (dict, DictConfig))
    return isinstance(value, hint)


def _allowed(hint: Any, meta: dict[str, Any]) -> str:
    """What a key may be, in words: "choose one of fp32, bf16", "must be a positive integer, or null (...)"."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    kind = next(arg for arg in typing.get_args(hint) if arg is not type(None)) if union else hint
    if typing.get_origin(kind) is Literal:
        return "choose one of " + ", ".join(map(str, typing.get_args(kind)))
    if kind is bool:
        return "must be true or false"
    if kind is int:
        rule = "a positive integer" if meta["low"] == 1 else f"an integer >= {meta['low']}"
    elif kind is float:
        rule = (f"> {meta['above']:g}" if meta["above"] is not None else f"in [{meta['low']:g}, {meta['high']:g}]"
                if meta["high"] is not None else f">= {meta['low']:g}")
    else:
        rule = {str: "a string", list: "a list", dict: "a mapping"}[kind]
    return f"must be {rule}" + (f", or null ({meta['null']})" if meta["null"] else "")


def _in_range(value: Any, meta: dict[str, Any]) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return True
    return (math.isfinite(value) and (meta["low"] is None or value >= meta["low"])
            and (meta["high"] is None or value <= meta["high"]) and (meta["above"] is None or value > meta["above"]))


def check(node: DictConfig, schema: type, where: str, problems: list[str]) -> None:
    """Append a line to ``problems`` for each unknown key, wrong type or out-of-range value of ``node`` (the config
    at ``where``: "train", "cluster", ...), checked against the dataclass ``schema``."""
    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    unknown = sorted(set(node.keys()) - set(fields))
    if unknown:
        problems.append(f"{where} has unknown keys {unknown}; allowed: {', '.join(fields)}")
    for name, field in fields.items():
        path = f"{where}.{name}"
        if name not in node:
            problems.append(f"{path} is missing: set it (e.g. +{path}={field.default!r})")
        elif not OmegaConf.is_missing(node, name):  # ??? values are reported once, by config_checks
            value = node[name]
            meta = {"low": None, "high": None, "above": None, "null": None, **field.metadata}
            if not (_matches(value, hints[name]) and _in_range(value, meta)):
                problems.append(f"{path}={shown(value)}: {_allowed(hints[name], meta)}")
