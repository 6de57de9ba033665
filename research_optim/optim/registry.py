"""Name → class of every optimizer config that is one class at its defaults, and ``make_cautious``.

The names are the config names (``conf/optimizer/<name>.yaml``; tested to agree): ``adamw`` and ``sgd`` are
torch's own classes, ``lib_adamw`` and ``lib_sgd`` the library's (readable per-tensor rules that take a cautious
mask; the library's SGD decays decoupled, as timm's SGDW). The Schedule-Free wrapper takes a base by these names.

    >>> opt = make_cautious(model.parameters(), base="lion", phi="soft", cautious_factor=0.5, lr=3e-4)

Hydra: ``conf/optimizer/cautious.yaml`` targets ``make_cautious`` (``optimizer=cautious optimizer.base=lion
optimizer.phi=soft``).
"""
from __future__ import annotations

from typing import Any

import torch
from torch.optim import Optimizer

from research_optim.optim.adafactor import Adafactor, CautiousAdafactor
from research_optim.optim.adamw import AdamW, CautiousAdamW
from research_optim.optim.cautious import check_phi
from research_optim.optim.lion import CautiousLion, Lion
from research_optim.optim.muon import CautiousMuon, Muon
from research_optim.optim.salsa import SaLSA
from research_optim.optim.radam_schedule_free import RAdamScheduleFree, RAdamScheduleFreeClosure
from research_optim.optim.schedule_free import AdamWScheduleFree, AdamWScheduleFreePaper, SGDScheduleFree
from research_optim.optim.schedule_free_closure import AdamWScheduleFreeClosure, SGDScheduleFreeClosure
from research_optim.optim.sgd import SGD
from research_optim.optim.sls import SLS, AdamSLS

__all__ = ["OPTIMIZERS", "CAUTIOUS_BASES", "make_cautious"]

OPTIMIZERS: dict[str, type[Optimizer]] = {
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "lib_adamw": AdamW,
    "c_adamw": CautiousAdamW,
    "lib_sgd": SGD,
    "lion": Lion,
    "c_lion": CautiousLion,
    "muon": Muon,
    "c_muon": CautiousMuon,
    "adafactor": Adafactor,
    "c_adafactor": CautiousAdafactor,
    "sf_adamw": AdamWScheduleFree,
    "sf_sgd": SGDScheduleFree,
    "sf_adamw_closure": AdamWScheduleFreeClosure,
    "sf_sgd_closure": SGDScheduleFreeClosure,
    "sf_adamw_paper": AdamWScheduleFreePaper,
    "sf_radam": RAdamScheduleFree,
    "sf_radam_closure": RAdamScheduleFreeClosure,
    "salsa": SaLSA,
    "sls": SLS,
    "adam_sls": AdamSLS,
}

# The bases make_cautious builds: the library's optimizers that take cautious= (the c_* presets already fix φ).
# sf_adamw needs inner_momentum > 0 (without it the mask would only drop g = 0 coordinates; refused).
CAUTIOUS_BASES: tuple[str, ...] = ("lib_adamw", "lion", "lib_sgd", "muon", "adafactor", "sf_adamw", "salsa")


def make_cautious(
    params: Any,
    base: str = "lib_adamw",
    phi: str = "indicator_mean",
    cautious_factor: float = 0.0,
    **base_kwargs: Any,
) -> Optimizer:
    """Build library optimizer ``base`` (a name of ``CAUTIOUS_BASES``) with cautious masking φ = ``phi`` on.

    ``base_kwargs`` go to the base's constructor; those set to ``None`` are dropped so the base keeps its own
    default (a Hydra node can then leave e.g. ``lr: null`` and switch bases without carrying the wrong one's
    defaults).
    """
    if phi is None:
        raise ValueError("make_cautious: phi must name a cautious phi (for no masking, use the base's own config)")
    check_phi("make_cautious", phi, cautious_factor)
    if "cautious" in base_kwargs:
        raise ValueError("make_cautious: pass the phi as phi=..., not cautious=...")
    if base not in CAUTIOUS_BASES:
        raise ValueError(f"make_cautious: unknown base {base!r}; allowed bases: {list(CAUTIOUS_BASES)}")
    kwargs = {key: value for key, value in base_kwargs.items() if value is not None}
    return OPTIMIZERS[base](params, cautious=phi, cautious_factor=cautious_factor, **kwargs)
