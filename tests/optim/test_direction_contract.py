"""Optimizer contract for the direction optimizers (Lion, AdamW, SGD, Muon, Adafactor) and their cautious variants:
state_dict round trip mid-run, hyperparameter validation (ValueError naming the argument), pickling, closures."""
from __future__ import annotations

import io
import pickle

import pytest
import torch

from research_optim.optim.adafactor import Adafactor, CautiousAdafactor
from research_optim.optim.adamw import AdamW, CautiousAdamW
from research_optim.optim.lion import CautiousLion, Lion
from research_optim.optim.muon import CautiousMuon, Muon
from research_optim.optim.sgd import SGD

from tests.optim.harness import make_params

OPTIMIZERS = {
    "lion": lambda p: Lion(p, lr=1e-2, weight_decay=0.1),
    "c_lion": lambda p: CautiousLion(p, lr=1e-2, weight_decay=0.1),
    "lion_soft": lambda p: Lion(p, lr=1e-2, cautious="soft", cautious_factor=0.3),
    "adamw": lambda p: AdamW(p, lr=1e-2),
    "c_adamw": lambda p: CautiousAdamW(p, lr=1e-2),
    "sgd": lambda p: SGD(p, lr=1e-2, momentum=0.9, weight_decay=0.1),
    "sgd_nesterov_cautious": lambda p: SGD(p, lr=1e-2, momentum=0.9, nesterov=True, cautious="signxor"),
    "adamw_groups": lambda p: AdamW([{"params": p[:2], "lr": 3e-2, "cautious": "indicator_ratio"},
                                     {"params": p[2:], "weight_decay": 0.0}], lr=1e-2),
    "muon": lambda p: Muon(p, lr=2e-2, implementation="foreach"),
    "c_muon": lambda p: CautiousMuon(p, lr=2e-2),
    "adafactor": lambda p: Adafactor(p, weight_decay=0.1),
    "c_adafactor": lambda p: CautiousAdafactor(p),
}


def _set_grads(params, gen):
    for p in params:
        p.grad = p.detach() + 0.5 * torch.randn(p.shape, generator=gen, dtype=p.dtype)


def _serialize(state_dict):
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_state_dict_round_trip_mid_run(name):
    make = OPTIMIZERS[name]
    params = [torch.nn.Parameter(t) for t in make_params()]
    opt = make(params)
    gen = torch.Generator().manual_seed(1)
    for _ in range(50):
        _set_grads(params, gen)
        opt.step()

    saved = _serialize(opt.state_dict())
    resumed_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    resumed = make(resumed_params)
    resumed.load_state_dict(saved)
    fresh_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    fresh = make(fresh_params)  # control: without the state the trajectory must differ

    for _ in range(20):
        state = gen.get_state()
        for group in (params, resumed_params, fresh_params):
            gen.set_state(state)
            _set_grads(group, gen)
        opt.step(), resumed.step(), fresh.step()
        for a, b in zip(params, resumed_params):
            assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(params, fresh_params))
    assert [g["cautious"] for g in resumed.param_groups] == [g["cautious"] for g in opt.param_groups]


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_pickle_keeps_state_and_diagnostics(name):
    params = [torch.nn.Parameter(t) for t in make_params(shapes=((3, 2),))]
    opt = OPTIMIZERS[name](params)
    _set_grads(params, torch.Generator().manual_seed(0))
    opt.step()
    clone = pickle.loads(pickle.dumps(opt))
    assert set(clone.diagnostics()) == set(opt.diagnostics())


def test_closure_is_evaluated_and_returned():
    p = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    opt = Lion([p], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (p**2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == 2.0
    torch.testing.assert_close(p.detach(), torch.tensor([0.9, -0.9]))


CLASSES = {"Lion": Lion, "CautiousLion": CautiousLion, "AdamW": AdamW, "CautiousAdamW": CautiousAdamW, "SGD": SGD,
           "Muon": Muon, "CautiousMuon": CautiousMuon, "Adafactor": Adafactor, "CautiousAdafactor": CautiousAdafactor}
BAD_COMMON = [
    (dict(lr=0.0), "lr"),
    (dict(lr=-1e-3), "lr"),
    (dict(weight_decay=-0.1), "weight_decay"),
    (dict(cautious="bogus"), "phi"),
    (dict(cautious="soft", cautious_factor=1.5), "cautious_factor"),
    (dict(cautious="soft", cautious_factor=-0.5), "cautious_factor"),
]
BAD_SPECIFIC = {
    "betas": [(dict(betas=(1.0, 0.9)), r"betas\[0\]"), (dict(betas=(-0.1, 0.9)), r"betas\[0\]"),
              (dict(betas=(0.9, 1.0)), r"betas\[1\]"), (dict(betas=(0.9,)), "betas")],
    "eps": [(dict(eps=-1e-8), "eps")],
    "momentum": [(dict(momentum=1.0), "momentum"), (dict(momentum=-0.1), "momentum"),
                 (dict(momentum=0.0, nesterov=True), "nesterov")],
}
CASES = [(cls, kw, match) for cls in CLASSES for kw, match in BAD_COMMON]
CASES += [(cls, kw, match) for cls in ("Lion", "CautiousLion", "AdamW", "CautiousAdamW")
          for kw, match in BAD_SPECIFIC["betas"]]
CASES += [(cls, kw, match) for cls in ("AdamW", "CautiousAdamW") for kw, match in BAD_SPECIFIC["eps"]]
CASES += [("SGD", kw, match) for kw, match in BAD_SPECIFIC["momentum"]]


@pytest.mark.parametrize("cls,kwargs,match", CASES, ids=[f"{c}-{k}" for c, k, _ in CASES])
def test_bad_hyperparameters_raise_value_error_naming_the_argument(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        CLASSES[cls]([torch.nn.Parameter(torch.zeros(2, 2))], **kwargs)  # a matrix: Muon's own group


@pytest.mark.parametrize("cls", sorted(CLASSES))
def test_bad_hyperparameter_in_a_param_group_raises(cls):
    good, bad = torch.nn.Parameter(torch.zeros(2, 2)), torch.nn.Parameter(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="lr"):
        CLASSES[cls]([{"params": [good]}, {"params": [bad], "lr": -1.0}])
