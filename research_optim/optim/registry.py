"""Name → class of every optimizer of the library, and ``make_cautious`` (cautious masking over any base).

Classes are named by import path and imported only when asked for, so this module works before (or without)
the modules of optimizers written elsewhere in the library, and importing it costs nothing.

    >>> opt = make_cautious(model.parameters(), base="lion", phi="soft", cautious_factor=0.5, lr=3e-4)

Hydra: ``conf/optimizer/cautious.yaml`` targets ``make_cautious`` (``optimizer=cautious optimizer.base=lion
optimizer.phi=soft``).
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any

from torch.optim import Optimizer

from research_optim.optim.cautious import PHI_FUNCTIONS, check_phi

__all__ = [
    "OPTIMIZERS", "PRESETS", "get_optimizer_class", "get_optimizer", "available_optimizers", "cautious_bases",
    "make_cautious",
]

OPTIMIZERS: dict[str, str] = {
    "adamw": "research_optim.optim.adamw.AdamW",
    "c_adamw": "research_optim.optim.adamw.CautiousAdamW",
    "lion": "research_optim.optim.lion.Lion",
    "c_lion": "research_optim.optim.lion.CautiousLion",
    "sgd": "research_optim.optim.sgd.SGD",
    "sf_adamw": "research_optim.optim.schedule_free.AdamWScheduleFree",
    "sf_sgd": "research_optim.optim.schedule_free.SGDScheduleFree",
    "sf_adamw_reference": "research_optim.optim.schedule_free_reference.AdamWScheduleFreeReference",
    "sf_sgd_reference": "research_optim.optim.schedule_free_reference.SGDScheduleFreeReference",
    "sf_wrapper": "research_optim.optim.schedule_free_wrapper.ScheduleFreeWrapper",
    "salsa": "research_optim.optim.salsa.SaLSA",
    "sls": "research_optim.optim.sls.SLS",
    "adam_sls": "research_optim.optim.sls.AdamSLS",
}

# Entries that already fix a phi: not offered as a base of make_cautious (the base is their parent).
PRESETS: frozenset[str] = frozenset({"c_adamw", "c_lion"})


def _import(path: str) -> type[Optimizer]:
    module_name, _, class_name = path.rpartition(".")
    return getattr(importlib.import_module(module_name), class_name)


def get_optimizer_class(name: str) -> type[Optimizer]:
    """The class registered as ``name``; ``ValueError`` for an unknown name, ``ImportError`` if its module is
    missing (an optimizer not written yet)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; registered: {sorted(OPTIMIZERS)}")
    path = OPTIMIZERS[name]
    try:
        return _import(path)
    except (ImportError, AttributeError) as err:
        raise ImportError(f"optimizer {name!r} is registered as {path} but could not be imported: {err}") from err


# Short alias: ``schedule_free_wrapper`` resolves a base name through ``registry.get_optimizer`` (OPTIMIZERS holds
# import paths, not classes, so a caller must not index the table directly).
get_optimizer = get_optimizer_class


def available_optimizers() -> list[str]:
    """Registered names whose class imports in this checkout."""
    names = []
    for name in OPTIMIZERS:
        try:
            get_optimizer_class(name)
        except ImportError:
            continue
        names.append(name)
    return names


def _accepts_cautious(cls: type) -> bool:
    return "cautious" in inspect.signature(cls.__init__).parameters


def cautious_bases() -> list[str]:
    """Bases ``make_cautious`` can build: importable, not a preset, and taking a ``cautious=`` argument."""
    return [name for name in available_optimizers()
            if name not in PRESETS and _accepts_cautious(get_optimizer_class(name))]


def make_cautious(
    params: Any,
    base: str = "adamw",
    phi: str = "indicator_mean",
    cautious_factor: float = 0.0,
    **base_kwargs: Any,
) -> Optimizer:
    """Build library optimizer ``base`` with cautious masking φ = ``phi`` on.

    ``base_kwargs`` go to the base's constructor; those set to ``None`` are dropped so the base keeps its own
    default (a Hydra node can then leave e.g. ``lr: null`` and switch bases without carrying the wrong one's
    defaults).
    """
    if phi is None:
        raise ValueError(f"make_cautious: phi must name a cautious phi, one of {sorted(PHI_FUNCTIONS)}")
    check_phi(phi, cautious_factor)
    for reserved in ("cautious",):
        if reserved in base_kwargs:
            raise ValueError(f"make_cautious: pass the phi as phi=..., not {reserved}=...")
    if base in PRESETS or base not in OPTIMIZERS:
        raise ValueError(f"make_cautious: unknown base {base!r}; allowed bases: {cautious_bases()}")
    cls = get_optimizer_class(base)
    if not _accepts_cautious(cls):
        raise ValueError(
            f"make_cautious: base {base!r} ({OPTIMIZERS[base]}) takes no cautious= argument; "
            f"allowed bases: {cautious_bases()}"
        )
    kwargs = {key: value for key, value in base_kwargs.items() if value is not None}
    return cls(params, cautious=phi, cautious_factor=cautious_factor, **kwargs)
