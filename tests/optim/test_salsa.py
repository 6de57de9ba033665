"""SaLSA: equality with the upstream package (``salsa-optimizer``) in compatibility mode, and the documented fixes."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from research_optim.optim.line_search import LossEvaluator
from research_optim.optim.salsa import SaLSA
from tests.fixtures.salsa_upstream import upstream_closure
from research_optim.optim.sls import SLS

from salsa.SaLSA import SaLSA as RefSaLSA


def regression_problem(seed: int = 0, dropout: float = 0.0, batches: int = 8):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    layers = [nn.Linear(4, 16), nn.Tanh()] + ([nn.Dropout(dropout)] if dropout else []) + [nn.Linear(16, 1)]
    model = nn.Sequential(*layers)
    xs = [torch.randn(32, 4, generator=gen) for _ in range(batches)]
    ys = [x.sum(1, keepdim=True).sin() for x in xs]
    return model, list(zip(xs, ys))


def plain_closure(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    return lambda: nn.functional.mse_loss(model(x), y)


def params_equal(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("use_mv", [False, True])
def test_compat_0_1_0_is_identical_to_the_upstream_package(float64_default, use_mv):
    model, batches = regression_problem()
    ref_model = copy.deepcopy(model)
    ours = SaLSA(model.parameters(), compat="0.1.0", use_mv=use_mv)
    ref = RefSaLSA(ref_model.parameters(), use_mv=use_mv)
    searched = skipped = backtracked = 0
    for t in range(150):
        x, y = batches[t % len(batches)]
        loss = ours.step(upstream_closure(model, x, y))
        ref_loss = ref.step(upstream_closure(ref_model, x, y))
        assert torch.equal(loss, ref_loss), t
        assert params_equal(model, ref_model), f"parameters differ after step {t + 1}"
        assert ours.step_size == ref.step_size, f"step size differs after step {t + 1}"
        diag = ours.diagnostics()
        searched += diag["line_search"] == 1.0
        skipped += diag["line_search"] == 0.0
        backtracked += diag["backtracks"] > 0
    assert ours.diagnostics()["cadence"] == ref.state["LS_freq"]
    # The comparison covered all three kinds of step.
    assert searched > 10 and skipped > 10 and backtracked > 0


def test_default_mode_differs_from_upstream(float64_default):
    model, batches = regression_problem()
    ref_model = copy.deepcopy(model)
    ours, ref = SaLSA(model.parameters()), RefSaLSA(ref_model.parameters())
    x, y = batches[0]
    ours.step(upstream_closure(model, x, y))
    ref.step(upstream_closure(ref_model, x, y))
    assert not params_equal(model, ref_model)


@pytest.mark.parametrize("compat", [None, "0.1.0", "717b41c"])
def test_bias_correction_exponent(compat):
    """First trial point of step 1: p0 − 1.1·g/(√v̂ + eps); textbook v̂ = g², upstream's v̂ = g²/(1+β2)."""
    p0 = torch.tensor([1.5, -0.5, 2.0], dtype=torch.float64)
    p = nn.Parameter(p0.clone())
    beta2 = 0.999
    opt = SaLSA([p], betas=(0.9, beta2), compat=compat)
    seen: list[torch.Tensor] = []

    def closure():
        seen.append(p.detach().clone())
        return (p ** 2).sum()

    opt.step(closure)
    g = 2 * p0
    v_hat = g ** 2 if compat is None else (1 - beta2) * g ** 2 / (1 - beta2 ** 2)
    expected_trial = p0 - 1.1 * g / (v_hat.sqrt() + 1e-8)
    torch.testing.assert_close(seen[1], expected_trial, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("direction,cautious", [("adam", None), ("sgd", None), ("sign", None),
                                                ("adam", "indicator_mean"), ("sign", "soft")])
def test_variants_train(direction, cautious):
    model, batches = regression_problem(seed=1)
    opt = SaLSA(model.parameters(), direction=direction, cautious=cautious, cautious_factor=0.1)

    def full_loss() -> float:
        with torch.no_grad():
            return sum(nn.functional.mse_loss(model(x), y).item() for x, y in batches) / len(batches)

    start = full_loss()
    for t in range(80):
        opt.step(plain_closure(model, *batches[t % len(batches)]))
    diag = opt.diagnostics()
    assert full_loss() < 0.5 * start
    assert math.isfinite(diag["step_size"]) and diag["step_size"] > 0
    if cautious:
        assert 0.0 <= diag["masked_fraction"] <= 1.0
    else:
        assert "masked_fraction" not in diag


@pytest.mark.parametrize("direction,expected", [("sgd", lambda g: g), ("sign", torch.sign)])
def test_search_direction_of_variants(direction, expected):
    p0 = torch.tensor([1.5, -0.5, 2.0], dtype=torch.float64)
    p = nn.Parameter(p0.clone())
    opt = SaLSA([p], direction=direction, init_step_size=0.01)
    seen: list[torch.Tensor] = []

    def closure():
        seen.append(p.detach().clone())
        return (p ** 2).sum()

    opt.step(closure)
    torch.testing.assert_close(seen[1], p0 - 0.011 * expected(2 * p0), rtol=1e-12, atol=1e-12)


def test_closure_forms_give_identical_trajectories():
    model_a, batches = regression_problem(seed=2, dropout=0.3)
    model_b = copy.deepcopy(model_a)
    opt_a, opt_b = SaLSA(model_a.parameters()), SaLSA(model_b.parameters())
    torch.manual_seed(123)
    for t in range(40):
        x, y = batches[t % len(batches)]
        rng = torch.get_rng_state()
        loss_a = opt_a.step(upstream_closure(model_a, x, y))
        torch.set_rng_state(rng)
        loss_b = opt_b.step(plain_closure(model_b, x, y))
        assert torch.equal(loss_a, loss_b)
        assert params_equal(model_a, model_b), f"closure forms diverge at step {t + 1}"
        assert opt_a.step_size == opt_b.step_size


def test_dropout_randomness_replayed_within_a_step():
    model, batches = regression_problem(seed=3, dropout=0.5)
    x, y = batches[0]
    evaluator = LossEvaluator(plain_closure(model, x, y), model.zero_grad, "test")
    first = evaluator.with_backward()
    assert torch.equal(evaluator.forward_only(), first)  # the η = 0 trial sees the same dropout masks
    assert torch.equal(evaluator.forward_only(), first)

    # Through the optimizer: every evaluation of a step draws the same numbers, and the global RNG stream advances
    # exactly as one plain evaluation would have advanced it.
    p = nn.Parameter(torch.tensor([2.0, -1.0]))
    opt = SaLSA([p])
    draws: list[torch.Tensor] = []

    def closure():
        draws.append(torch.rand(3))
        return (p ** 2).sum() * (1 + draws[-1].sum())

    torch.manual_seed(7)
    opt.step(closure)
    assert len(draws) >= 2 and all(torch.equal(d, draws[0]) for d in draws)
    after_step = torch.rand(1)
    torch.manual_seed(7)
    torch.rand(3)
    assert torch.equal(torch.rand(1), after_step)


def test_speed_up_steps_take_one_forward_and_never_sync(monkeypatch):
    model, batches = regression_problem(seed=4)
    opt = SaLSA(model.parameters())
    syncs = {"n": 0}

    def counting(name):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, **kwargs):
            syncs["n"] += 1
            return original(self, *args, **kwargs)
        return wrapper

    for name in ("item", "tolist", "__bool__", "__float__"):
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    skipped = searched = 0
    for t in range(60):
        calls = {"n": 0}
        inner = plain_closure(model, *batches[t % len(batches)])

        def closure():
            calls["n"] += 1
            return inner()

        syncs["n"] = 0
        opt.step(closure)
        if t < 9:  # t < search_warmup: every step searches
            assert calls["n"] >= 2
        if calls["n"] == 1:
            skipped += 1
            assert syncs["n"] == 0, f"step {t + 1} without a line search synchronised with the device"
        else:
            searched += 1
            assert syncs["n"] > 0  # the counter does see the search's syncs
    assert skipped >= 3 and searched > 10
    opt_no_speed = SaLSA(model.parameters(), speed_up=False)
    for t in range(12):
        opt_no_speed.step(plain_closure(model, *batches[t % len(batches)]))
        assert opt_no_speed.diagnostics()["line_search"] == 1.0


def test_state_dict_round_trip_mid_run():
    model, batches = regression_problem(seed=5, dropout=0.2)
    opt = SaLSA(model.parameters(), weight_decay=0.01)
    torch.manual_seed(11)
    for t in range(17):
        opt.step(plain_closure(model, *batches[t % len(batches)]))
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    rng = torch.get_rng_state()
    for t in range(17, 40):
        opt.step(plain_closure(model, *batches[t % len(batches)]))
    trajectory_end, step_size = copy.deepcopy(model.state_dict()), opt.step_size

    model2, _ = regression_problem(seed=99, dropout=0.2)
    model2.load_state_dict(saved_model)
    opt2 = SaLSA(model2.parameters(), weight_decay=0.01)
    opt2.load_state_dict(saved_opt)
    torch.set_rng_state(rng)
    for t in range(17, 40):
        opt2.step(plain_closure(model2, *batches[t % len(batches)]))
    assert all(torch.equal(trajectory_end[k], v) for k, v in model2.state_dict().items())
    assert opt2.step_size == step_size



@pytest.mark.parametrize("cls", [SaLSA, SLS])
def test_deepcopy_mid_run_continues_the_same_trajectory(cls):
    """copy.deepcopy / pickle keep the hyperparameters and the search state (attributes, not param groups)."""
    model, batches = regression_problem(seed=3)
    opt = cls(model.parameters(), weight_decay=0.01, cautious="indicator_mean") if cls is SaLSA \
        else cls(model.parameters())
    for t in range(9):
        opt.step(plain_closure(model, *batches[t % len(batches)]))
    model2, opt2 = copy.deepcopy((model, opt))
    for m, o in ((model, opt), (model2, opt2)):
        for t in range(9, 30):
            o.step(plain_closure(m, *batches[t % len(batches)]))
    assert params_equal(model, model2) and opt2.step_size == opt.step_size
    assert opt2.diagnostics() == opt.diagnostics()

def test_param_groups_per_group_weight_decay():
    a = nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64))
    b = nn.Parameter(torch.tensor([3.0, -4.0], dtype=torch.float64))
    frozen = nn.Parameter(torch.tensor([5.0], dtype=torch.float64))
    opt = SaLSA([{"params": [a]}, {"params": [b], "weight_decay": 0.1}, {"params": [frozen]}], init_step_size=0.5)

    def closure():  # b and frozen get zero gradients: only the decay moves them
        return (a ** 2).sum() + 0.0 * (b.sum() + frozen.sum())

    opt.step(closure)
    torch.testing.assert_close(b.detach(), torch.tensor([3.0, -4.0], dtype=torch.float64) * (1 - 0.1 * 0.5))
    assert torch.equal(frozen.detach(), torch.tensor([5.0], dtype=torch.float64))
    assert not torch.equal(a.detach(), torch.tensor([1.0, 2.0], dtype=torch.float64))
    assert all(group["lr"] == opt.step_size for group in opt.param_groups)


@pytest.mark.parametrize("kwargs,name", [
    ({"init_step_size": 0.0}, "init_step_size"), ({"c": 1.0}, "c"), ({"c": 0.0}, "c"),
    ({"betas": (0.9, 1.0)}, "betas[1]"), ({"betas": (-0.1, 0.9)}, "betas[0]"), ({"beta3": 1.0}, "beta3"),
    ({"growth": 0.9}, "growth"), ({"backtrack": 1.0}, "backtrack"), ({"max_tries": 0}, "max_tries"),
    ({"cadence_cap": 0.5}, "cadence_cap"), ({"search_warmup": -1}, "search_warmup"),
    ({"step_size_ema": (0.9, 1.0)}, "step_size_ema[1]"), ({"eps": -1.0}, "eps"),
    ({"weight_decay": -0.1}, "weight_decay"), ({"direction": "lion"}, "direction"),
    ({"cautious": "nope"}, "phi"), ({"grad_scaler": object()}, "grad_scaler"),
])
def test_bad_hyperparameters_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name.replace("[", r"\[").replace("]", r"\]")):
        SaLSA([nn.Parameter(torch.zeros(2))], **kwargs)


def test_step_without_closure_and_bad_losses_raise():
    p = nn.Parameter(torch.ones(2))
    opt = SaLSA([p])
    with pytest.raises(RuntimeError, match="closure"):
        opt.step()
    with pytest.raises(TypeError, match="float32/float64"):
        opt.step(lambda: (p ** 2).sum().half())
    with pytest.raises(TypeError, match="scalar loss"):
        opt.step(lambda: p ** 2)


@pytest.mark.parametrize("compat", [None, "0.1.0", "717b41c"])
def test_exhausted_search_stays_at_the_last_trial(compat):
    """Every trial fails (any move costs +100): the parameters stay at the last trial point; η is that trial's
    step size (upstream records one more backtrack)."""
    p0 = torch.tensor([1.0, -2.0], dtype=torch.float64)
    p = nn.Parameter(p0.clone())
    opt = SaLSA([p], direction="sgd", max_tries=3, compat=compat)
    opt.step(lambda: (p ** 2).sum() + 100.0 * (p.detach() != p0).any())
    last_tried = 1.1 * 0.8 ** 2
    torch.testing.assert_close(p.detach(), p0 - last_tried * 2 * p0, rtol=1e-12, atol=1e-12)
    assert opt.step_size == pytest.approx(last_tried * (1.0 if compat is None else 0.8), rel=1e-12)
    assert opt.diagnostics()["forwards"] == 4.0
