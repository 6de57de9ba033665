"""Classic SLS (Vaswani et al. 2019) and Adam-SLS (vs the upstream package's ``salsa.adam_sls``)."""
from __future__ import annotations

import contextlib
import copy
import io

import pytest
import torch
from torch import nn

from research_optim.optim.sls import SLS, AdamSLS

from salsa.adam_sls import AdamSLS as RefAdamSLS


def regression_problem(seed: int = 0, batches: int = 8):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
    xs = [torch.randn(32, 4, generator=gen) for _ in range(batches)]
    return model, [(x, x.sum(1, keepdim=True).sin()) for x in xs]


def plain_closure(model, x, y):
    return lambda: nn.functional.mse_loss(model(x), y)


@pytest.mark.parametrize("init_step_size", [pytest.param(1.0, marks=pytest.mark.slow), 0.1])  # a long comparison each
def test_adam_sls_is_identical_to_the_upstream_package(float64_default, init_step_size):
    model, batches = regression_problem()
    ref_model = copy.deepcopy(model)
    ours = AdamSLS(model.parameters(), init_step_size=init_step_size)
    ref = RefAdamSLS([list(ref_model.parameters())], init_step_size=init_step_size, smooth=False, speed_up=False)
    backtracked = 0
    for t in range(120):
        x, y = batches[t % len(batches)]
        ref_model.zero_grad()  # upstream's Adam-SLS accumulates into .grad; ours zero-grads itself
        ours.step(plain_closure(model, x, y))
        with contextlib.redirect_stdout(io.StringIO()):
            ref.step(plain_closure(ref_model, x, y))
        for p, q in zip(model.parameters(), ref_model.parameters()):
            assert torch.equal(p, q), f"parameters differ after step {t + 1}"
        assert ours.step_size == ref.state["step_sizes"][0], f"step size differs after step {t + 1}"
        backtracked += ours.diagnostics()["backtracks"] > 0
    assert backtracked > 5


def _expected_sls_on_quadratic(p: float, targets: list[float], eta: float, n_batches: int) -> list[tuple[float, float]]:
    """The paper's rule on f_b(p) = ½(p − b)², written out in scalars: reset, then backtrack until Armijo holds."""
    out = []
    for b in targets:
        loss, g = 0.5 * (p - b) ** 2, p - b
        eta = eta * 2.0 ** (1.0 / n_batches)
        while not 0.5 * (p - eta * g - b) ** 2 <= loss - 0.1 * eta * g * g:
            eta *= 0.9
        p = p - eta * g
        out.append((p, eta))
    return out


def test_sls_follows_the_armijo_rule_on_a_quadratic():
    targets = [0.3, -1.0, 2.0, 0.5, 1.5, -0.7] * 5
    p = nn.Parameter(torch.tensor([4.0], dtype=torch.float64))
    opt = SLS([p], init_step_size=5.0, n_batches_per_epoch=6)
    expected = _expected_sls_on_quadratic(4.0, targets, 5.0, 6)
    backtracked = 0
    for b, (p_expected, eta_expected) in zip(targets, expected):
        opt.step(lambda b=b: 0.5 * ((p - b) ** 2).sum())
        assert opt.step_size == pytest.approx(eta_expected, rel=1e-12)
        assert p.item() == pytest.approx(p_expected, rel=1e-12, abs=1e-12)
        backtracked += opt.diagnostics()["backtracks"] > 0
    assert backtracked > 0


def test_sls_accepted_steps_satisfy_armijo():
    model, batches = regression_problem(seed=1)
    opt = SLS(model.parameters(), n_batches_per_epoch=len(batches))
    for t in range(40):
        x, y = batches[t % len(batches)]
        closure = plain_closure(model, x, y)
        before = [p.detach().clone() for p in model.parameters()]
        opt.step(closure)
        grads = [p.grad.clone() for p in model.parameters()]
        with torch.no_grad():
            for p, p0, g in zip(model.parameters(), before, grads):  # the step is the trial point p0 − η·g
                torch.testing.assert_close(p.detach(), p0 - opt.step_size * g, rtol=1e-6, atol=1e-7)
            after_loss = closure().item()
            after = [p.detach().clone() for p in model.parameters()]
            for p, p0 in zip(model.parameters(), before):
                p.copy_(p0)
            before_loss = closure().item()
            grad_sq = sum((g ** 2).sum().item() for g in grads)
            assert after_loss <= before_loss - 0.1 * opt.step_size * grad_sq + 1e-6
            for p, a in zip(model.parameters(), after):
                p.copy_(a)


@pytest.mark.parametrize("cls", [SLS, AdamSLS])
def test_state_dict_round_trip(cls):
    model, batches = regression_problem(seed=2)
    opt = cls(model.parameters())
    for t in range(10):
        opt.step(plain_closure(model, *batches[t % len(batches)]))
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    for t in range(10, 25):
        opt.step(plain_closure(model, *batches[t % len(batches)]))
    model2, _ = regression_problem(seed=3)
    model2.load_state_dict(saved_model)
    opt2 = cls(model2.parameters())
    opt2.load_state_dict(saved_opt)
    for t in range(10, 25):
        opt2.step(plain_closure(model2, *batches[t % len(batches)]))
    assert opt2.step_size == opt.step_size
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("cls,kwargs,name", [
    (SLS, {"init_step_size": -1.0}, "init_step_size"), (SLS, {"c": 1.5}, "c"), (SLS, {"backtrack": 0.0}, "backtrack"),
    (SLS, {"n_batches_per_epoch": 0}, "n_batches_per_epoch"), (SLS, {"reset_factor": 0.5}, "reset_factor"),
    (SLS, {"max_tries": 0}, "max_tries"), (SLS, {"weight_decay": -1.0}, "weight_decay"),
    (SLS, {"grad_scaler": object()}, "grad_scaler"),
    (AdamSLS, {"betas": (1.0, 0.9)}, r"betas\[0\]"), (AdamSLS, {"eps": -1.0}, "eps"),
])
def test_bad_hyperparameters_name_the_argument(cls, kwargs, name):
    with pytest.raises(ValueError, match=name):
        cls([nn.Parameter(torch.zeros(2))], **kwargs)


@pytest.mark.parametrize("cls", [SLS, AdamSLS])
def test_step_without_closure_raises(cls):
    with pytest.raises(RuntimeError, match="closure"):
        cls([nn.Parameter(torch.zeros(2))]).step()
