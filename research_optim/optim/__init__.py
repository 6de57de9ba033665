"""The optimizer library: plain PyTorch, importable without Hydra or W&B.

Every optimizer is a ``torch.optim.Optimizer``. The training loop drives them through three protocols,
which an optimizer opts into by what it defines (see ``research_optim.protocols``):

* plain ``step()`` — the default;
* ``requires_closure = True`` — ``step(closure)`` evaluates the loss itself (line search);
* ``train()`` / ``eval()`` methods — the loop switches modes around evaluation and checkpointing (Schedule-Free).

An optimizer may also define ``diagnostics() -> dict[str, float]``; the loop calls it only when it logs, so that
reading its counters (kept on the device) costs no host sync on the other steps. Some steps sync by their nature:
the line searches read the loss inside ``step`` (SaLSA on its search steps only, SLS and Adam-SLS on every step),
and Adafactor reads each tensor's RMS on every step (as torch's does). The loop's ``train.nonfinite=skip`` mode
adds one sync per step of its own. How the library is built (rules, transforms) and how to add an optimizer:
docs/adding_an_optimizer.md.
"""

from research_optim.optim.adafactor import Adafactor, CautiousAdafactor
from research_optim.optim.adamw import AdamW, CautiousAdamW
from research_optim.optim.lion import CautiousLion, Lion
from research_optim.optim.muon import CautiousMuon, Muon
from research_optim.optim.radam_schedule_free import RAdamScheduleFree, RAdamScheduleFreeClosure
from research_optim.optim.registry import OPTIMIZERS, make_cautious
from research_optim.optim.salsa import SaLSA
from research_optim.optim.schedule_free import AdamWScheduleFree, AdamWScheduleFreePaper, SGDScheduleFree
from research_optim.optim.schedule_free_closure import AdamWScheduleFreeClosure, SGDScheduleFreeClosure
from research_optim.optim.schedule_free_reference import AdamWScheduleFreeReference, SGDScheduleFreeReference
from research_optim.optim.schedule_free_wrapper import ScheduleFreeWrapper, ScheduleFreeWrapperReference
from research_optim.optim.sgd import SGD
from research_optim.optim.sls import SLS, AdamSLS

__all__ = [
    "AdamW", "CautiousAdamW", "Lion", "CautiousLion", "SGD", "Muon", "CautiousMuon", "Adafactor", "CautiousAdafactor",
    "make_cautious", "OPTIMIZERS", "AdamWScheduleFree",
    "SGDScheduleFree", "AdamWScheduleFreeReference", "SGDScheduleFreeReference", "ScheduleFreeWrapper", "SaLSA",
    "AdamWScheduleFreePaper", "AdamWScheduleFreeClosure", "SGDScheduleFreeClosure", "RAdamScheduleFree",
    "RAdamScheduleFreeClosure", "ScheduleFreeWrapperReference",
    "SLS", "AdamSLS",
]
