"""SaLSA's multi-tensor (``implementation="foreach"``) path against the per-tensor reference.

The foreach path runs the same arithmetic op for op (no lerp / fused add-with-alpha), so on CPU the two
trajectories are compared bit for bit: parameters, step sizes and every state tensor after every step.
"""
from __future__ import annotations

import copy

import pytest
import torch

from research_optim.optim.salsa import SaLSA
from tests.optim.harness import SHAPES, make_params

STEPS = 60
# A short warmup and quick step-size EMAs: the cadence settles within the run, so both kinds of step (line
# search, speed-up step) are compared (with the defaults nearly every one of the first 60 steps searches).
QUICK_CADENCE = {"search_warmup": 3, "step_size_ema": (0.5, 0.7), "cadence_cap": 4.0}


def noisy_problem(params: list[torch.Tensor], seed: int):
    """A stochastic non-quadratic, non-negative loss over raw tensors (any dtypes): one new batch (target) per step
    (SaLSA refuses a negative loss)."""
    gen = torch.Generator().manual_seed(seed)
    targets = [[torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params] for _ in range(8)]

    def closure_for(step: int):
        batch = targets[step % len(targets)]

        def closure() -> torch.Tensor:
            loss = torch.zeros((), dtype=torch.float64)
            for p, target in zip(params, batch):
                loss = loss + ((p - target).square().mean() + 0.1 * torch.tanh(p).square().sum()).to(torch.float64)
            return loss.to(params[0].dtype)
        return closure
    return closure_for


def two_groups(params: list[torch.nn.Parameter], weight_decay: float) -> list[dict]:
    """Two param groups, the second with its own (double) weight decay."""
    return [{"params": params[:2], "weight_decay": weight_decay},
            {"params": params[2:], "weight_decay": 2.0 * weight_decay}]


def run_both(steps: int = STEPS, dtypes: tuple[torch.dtype, ...] = (torch.float32,), **kwargs) -> tuple[SaLSA, SaLSA]:
    """Step a foreach and a reference SaLSA on identical tensors and losses; assert bit equality every step."""
    init = [t.to(dtypes[i % len(dtypes)]) for i, t in enumerate(make_params(SHAPES, seed=3, dtype=torch.float32))]
    weight_decay = kwargs.pop("weight_decay", 0.0)
    runs = {}
    for implementation in ("foreach", "reference"):
        params = [torch.nn.Parameter(t.clone()) for t in init]
        opt = SaLSA(two_groups(params, weight_decay), implementation=implementation, **QUICK_CADENCE, **kwargs)
        runs[implementation] = (params, opt, noisy_problem(params, seed=11))
    (fast_p, fast, fast_loss), (ref_p, ref, ref_loss) = runs["foreach"], runs["reference"]
    searched = skipped = 0
    for t in range(steps):
        fast.step(fast_loss(t))
        ref.step(ref_loss(t))
        diag = ref.diagnostics()
        searched += int(diag["forwards"] > 1)  # a search that evaluated trial points
        skipped += int(fast.diagnostics()["line_search"] == 0.0)
        assert fast.step_size == ref.step_size, f"step size differs after step {t + 1}"
        for i, (a, b) in enumerate(zip(fast_p, ref_p)):
            assert torch.equal(a, b), f"tensor {i} differs after step {t + 1}: {(a - b).abs().max()}"
    assert searched > 10 and skipped > 5  # both kinds of step (search, speed-up) were compared
    fast_state, ref_state = fast.state_dict(), ref.state_dict()
    assert fast_state["salsa"] == ref_state["salsa"]
    for key, state in ref_state["state"].items():
        assert state.keys() == fast_state["state"][key].keys()  # identical state keys
        assert all(torch.equal(state[name], fast_state["state"][key][name]) for name in state)
    return fast, ref


@pytest.mark.parametrize("direction", ["adam", "sgd", "sign", "muon"])
@pytest.mark.parametrize("cautious", [None, "indicator_mean"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_foreach_matches_reference_bit_for_bit(direction, cautious, weight_decay):
    run_both(direction=direction, cautious=cautious, weight_decay=weight_decay)


def test_sgd_without_momentum_compat_and_use_mv_match():
    run_both(direction="sgd", betas=(0.0, 0.999))
    run_both(direction="adam", compat="717b41c", weight_decay=0.01)
    run_both(direction="adam", use_mv=True, cautious="indicator_mean")


def test_mixed_dtypes_are_bucketed_and_keep_parameter_order():
    # float32 and float64 tensors interleaved: two buckets, results written back to the right tensors
    fast, _ = run_both(dtypes=(torch.float32, torch.float64), weight_decay=0.01)
    for group in fast.param_groups:
        for p in group["params"]:
            assert fast.state[p]["exp_avg"].dtype == p.dtype


def test_auto_is_foreach_and_unknown_implementation_raises():
    p = torch.nn.Parameter(torch.ones(3))
    assert SaLSA([p]).implementation == "auto" and SaLSA([p])._foreach
    assert not SaLSA([p], implementation="reference")._foreach
    with pytest.raises(ValueError, match="implementation"):
        SaLSA([p], implementation="compiled")


def test_state_dict_moves_between_implementations():
    """A reference run's state_dict resumes under foreach exactly as under the reference (same state layout)."""
    params = [torch.nn.Parameter(t) for t in make_params(SHAPES, seed=5, dtype=torch.float32)]
    closure_for = noisy_problem(params, seed=2)
    ref = SaLSA(params, implementation="reference", weight_decay=0.01)
    for t in range(15):
        ref.step(closure_for(t))
    snapshot, start = copy.deepcopy(ref.state_dict()), [p.detach().clone() for p in params]
    ends = []
    for implementation in ("foreach", "reference"):
        with torch.no_grad():
            for p, s in zip(params, start):
                p.copy_(s)
        resumed = SaLSA(params, implementation=implementation, weight_decay=0.01)
        resumed.load_state_dict(copy.deepcopy(snapshot))
        for t in range(15, 30):
            resumed.step(closure_for(t))
        ends.append([p.detach().clone() for p in params])
    assert not all(torch.equal(a, b) for a, b in zip(ends[0], start))
    assert all(torch.equal(a, b) for a, b in zip(*ends))


def test_foreach_speed_up_steps_never_sync(monkeypatch):
    """The multi-tensor statistics and directions add no host sync: steps without a search never synchronise."""
    params = [torch.nn.Parameter(t) for t in make_params(SHAPES, seed=4, dtype=torch.float32)]
    closure_for = noisy_problem(params, seed=6)
    opt = SaLSA(params, implementation="foreach", weight_decay=0.01, **QUICK_CADENCE)
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
    for t in range(STEPS):
        syncs["n"] = 0
        opt.step(closure_for(t))
        if opt.diagnostics()["line_search"] == 0.0:
            skipped += 1
            assert syncs["n"] == 0, f"step {t + 1} without a line search synchronised with the device"
        else:
            searched += 1
            assert syncs["n"] > 0  # the counter does see the search's syncs
    assert skipped >= 5 and searched > 10
