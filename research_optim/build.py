"""Turn config nodes into objects: data set, model, optimizer (with its param groups) and schedule.

Every group node is ``{name: ..., _target_: ..., **kwargs}``; ``name`` (and the other keys in ``META_KEYS``) label
the choice for reports and checks and are not passed to the constructor.
"""
from __future__ import annotations

from typing import Any

import hydra.utils
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.optim import Optimizer

from research_optim.data.base import Dataset
from research_optim.errors import UserError
from research_optim.optim import muon
from research_optim.optim.implementation import eager_path
from research_optim.schedules import build_schedule

META_KEYS = ("name", "accepts", "kind", "hidden_matrices")


def constructor_args(node: DictConfig) -> dict[str, Any]:
    args = OmegaConf.to_container(node, resolve=True)
    assert isinstance(args, dict)
    for key in META_KEYS:
        args.pop(key, None)
    return args


def instantiate(config: Any) -> Any:
    """``hydra.utils.instantiate`` (plain containers for arguments), except that a :class:`UserError` raised by a
    constructor reaches the caller as itself — one line for the user — instead of wrapped in Hydra's exception."""
    try:
        return hydra.utils.instantiate(config, _convert_="all")
    except InstantiationException as error:
        cause = error.__cause__
        while isinstance(cause, InstantiationException):
            cause = cause.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        raise


def build_data(node: DictConfig) -> Dataset:
    return instantiate(constructor_args(node))


def build_model(node: DictConfig, dataset: Dataset) -> nn.Module:
    """The model for the data's spec; ``pretrained`` (a local path) loads its weights (``models/pretrained.py``)."""
    args = constructor_args(node)
    pretrained = args.pop("pretrained", None)
    model = instantiate(args)(dataset.spec)
    if pretrained is not None:
        from research_optim.models.pretrained import load_pretrained

        load_pretrained(model, pretrained)
    return model


def param_groups(model: nn.Module, decay_norm_and_bias: bool, hidden_matrices: bool = False) -> list[dict[str, Any]]:
    """One group, or two: matrices/embeddings (decayed) and 1-D tensors — biases, norm scales (no decay).

    ``hidden_matrices`` (the Muon configs' key) splits each group by ``use_muon``: the hidden layers' 2-D weights
    (``optim.muon.hidden_matrices``) and the rest (embeddings, the output head, norms, biases)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if decay_norm_and_bias:
        groups = [{"params": params}]
    else:
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        groups = [g for g in ({"params": decay}, {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    if not hidden_matrices:
        return groups
    matrices = {id(p) for p in muon.hidden_matrices(model)}
    split = [{**g, "params": [p for p in g["params"] if (id(p) in matrices) == use], "use_muon": use}
             for g in groups for use in (True, False)]
    return [g for g in split if g["params"]]


def build_optimizer(node: DictConfig, model: nn.Module, decay_norm_and_bias: bool,
                    steps_per_epoch: int | None = None, compile: bool = True) -> Optimizer:
    """``n_batches_per_epoch: null`` (classic SLS's step-size reset) is filled in from the data.

    ``compile=False`` (``train.compile_optimizer=false``) gives an optimizer with compiled steps (``implementation``
    auto or compiled) its eager path instead — this optimizer only, nothing process-wide; ``compile=True`` leaves the
    choice to ``implementation`` (and ``RESEARCH_OPTIM_COMPILE=0`` switches compilation off for the process)."""
    args = constructor_args(node)
    if "n_batches_per_epoch" in args and args["n_batches_per_epoch"] is None:
        if steps_per_epoch is None:
            del args["n_batches_per_epoch"]  # a stream has no epochs: the optimizer's default
        else:
            args["n_batches_per_epoch"] = steps_per_epoch
    factory = instantiate(args)

    def build(**kwargs: Any) -> Optimizer:
        return factory(param_groups(model, decay_norm_and_bias, bool(node.get("hidden_matrices", False))), **kwargs)

    optimizer = build()
    paths = getattr(optimizer, "paths", ())
    if not compile and "compiled" in paths and getattr(optimizer, "implementation", None) in ("auto", "compiled"):
        optimizer = build(implementation=eager_path(paths))  # its paths are known once it holds its groups
    return optimizer


def build_lr_schedule(node: DictConfig, optimizer: Optimizer, total_steps: int):
    return build_schedule(optimizer, node.name, total_steps, node.warmup_steps, node.final_lr_ratio)
