"""The fast paths of Lion / AdamW / SGD (every φ, weight decay on and off) equal the per-tensor reference.

foreach: bit for bit (the same ops per tensor). compiled: float32, 1e-6 relative per step (the compiled arithmetic
differs from the reference only by rounding: products written out where the reference passes ``alpha=``, lerp as
start + w·(end − start) for every weight). Several
shapes, param groups, bf16 parameters, a state_dict round trip between implementations, the masked-fraction
diagnostic, the ``auto`` choice and the fallback when the compiler fails.
"""
from __future__ import annotations

import copy

import pytest
import torch

from research_optim.optim.adamw import AdamW
from research_optim.optim.cautious import PHI_FUNCTIONS
from research_optim.optim.implementation import (
    COMPILE_MIN_NUMEL, compile_enabled, lerp, lerp_, resolve, set_compile_enabled,
)
from research_optim.optim.lion import Lion
from research_optim.optim.sgd import SGD
from tests.optim.harness import FAST_PATHS, make_params, run_side_by_side

pytestmark = [pytest.mark.skipif(not torch._dynamo.is_dynamo_supported(), reason="torch.compile unavailable"),
              pytest.mark.usefixtures("compilation_on")]

PHIS = [None, *sorted(PHI_FUNCTIONS)]
RULES = {
    "lion": lambda ps, **kw: Lion(ps, lr=1e-3, **kw),
    "adamw": lambda ps, **kw: AdamW(ps, lr=1e-2, **kw),
    "sgd": lambda ps, **kw: SGD(ps, lr=1e-2, momentum=0.9, nesterov=True, **kw),
}


@pytest.mark.parametrize("implementation,tolerance", FAST_PATHS)
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("phi", PHIS)
@pytest.mark.parametrize("rule", sorted(RULES))
def test_fast_path_equals_reference(rule, phi, weight_decay, implementation, tolerance):
    kw = dict(weight_decay=weight_decay, cautious=phi, cautious_factor=0.3 if phi == "soft" else 0.0)
    run_side_by_side(lambda ps: RULES[rule](ps, implementation=implementation, **kw),
                     lambda ps: RULES[rule](ps, implementation="reference", **kw), steps=15, **tolerance)


@pytest.mark.parametrize("implementation,tolerance", FAST_PATHS)
@pytest.mark.parametrize("rule", ["lion", "adamw"])
def test_betas_whose_lerp_weight_is_half_or_more(rule, implementation, tolerance):
    """β ≤ 0.5: torch's lerp takes its other formula (end − (1 − w)·(end − start)), the compiled step keeps
    start + w·(end − start) (``implementation.lerp``); β1 = 0 gives w = 1, where lerp returns ``end`` itself."""
    make = RULES[rule]
    run_side_by_side(lambda ps: make(ps, betas=(0.0, 0.3), implementation=implementation),
                     lambda ps: make(ps, betas=(0.0, 0.3), implementation="reference"), steps=15, **tolerance)


def test_lerp_writes_the_formula_out_only_for_a_tensor_weight():
    start, end = torch.randn(1000), torch.randn(1000) * 10
    for w in (0.0, 0.01, 0.3, 0.5, 0.7, 1.0):
        assert torch.equal(lerp(start, end, w), torch.lerp(start, end, w))
        assert torch.equal(lerp_(start.clone(), end, w), torch.lerp(start, end, w))
        weight = torch.tensor(w, dtype=torch.float64)
        written_out = start + float(w) * (end - start)
        assert torch.equal(lerp(start, end, weight), written_out)
        assert torch.equal(lerp_(start.clone(), end, weight), written_out)
        torch.testing.assert_close(lerp(start, end, weight), torch.lerp(start, end, w), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False)])
@pytest.mark.parametrize("implementation,tolerance", FAST_PATHS)
def test_sgd_variants(momentum, nesterov, implementation, tolerance):
    make = lambda impl: lambda ps: SGD(ps, lr=1e-2, momentum=momentum, nesterov=nesterov, weight_decay=0.1,
                                       cautious="indicator_mean", implementation=impl)
    run_side_by_side(make(implementation), make("reference"), steps=10, **tolerance)


@pytest.mark.parametrize("implementation,tolerance", FAST_PATHS)
def test_param_groups_and_lr_changes(implementation, tolerance):
    """Two groups with their own lr, decay and φ; lr changes every step (a schedule) without diverging."""
    def make(impl):
        def build(ps):
            return AdamW([{"params": ps[:2], "weight_decay": 0.0, "cautious": "soft", "cautious_factor": 0.5},
                          {"params": ps[2:], "lr": 3e-3}], lr=1e-2, cautious="indicator_mean", implementation=impl)
        return build

    def schedule(t, ours, ref):
        for opt in (ours, ref):
            for group in opt.param_groups:
                group["lr"] *= 0.9

    run_side_by_side(make(implementation), make("reference"), steps=10, between_steps=schedule, **tolerance)


@pytest.mark.slow  # compiles
def test_bfloat16_params_follow_the_float32_trajectory():
    """bf16 parameters: both implementations stay within bf16 rounding of each other."""
    ps_fast = [torch.nn.Parameter(t.to(torch.bfloat16)) for t in make_params(dtype=torch.float32)]
    ps_ref = [torch.nn.Parameter(t.detach().clone()) for t in ps_fast]
    fast = Lion(ps_fast, lr=1e-2, weight_decay=0.1, cautious="indicator_mean", implementation="compiled")
    ref = Lion(ps_ref, lr=1e-2, weight_decay=0.1, cautious="indicator_mean", implementation="reference")
    gen = torch.Generator().manual_seed(3)
    for _ in range(5):
        for a, b in zip(ps_fast, ps_ref):
            a.grad = torch.randn(a.shape, generator=gen).to(torch.bfloat16)
            b.grad = a.grad.clone()
        fast.step()
        ref.step()
    for a, b in zip(ps_fast, ps_ref):
        assert a.dtype == torch.bfloat16 and fast.state[a]["exp_avg"].dtype == torch.bfloat16
        torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=2e-2)


def _train(opt, params, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p in params:
            p.grad = p.detach() + torch.randn(p.shape, generator=gen)
        opt.step()


@pytest.mark.slow  # compiles
@pytest.mark.parametrize("first,second", [("compiled", "reference"), ("reference", "compiled")])
def test_state_dict_round_trip_between_implementations(first, second):
    init = make_params(dtype=torch.float32)
    a = [torch.nn.Parameter(t.clone()) for t in init]
    b = [torch.nn.Parameter(t.clone()) for t in init]
    opt_a = AdamW(a, lr=1e-2, cautious="indicator_mean", implementation=first)
    _train(opt_a, a, 4, seed=1)
    opt_b = AdamW(b, lr=1e-2, cautious="indicator_mean", implementation=second)
    with torch.no_grad():
        for pb, pa in zip(b, a):
            pb.copy_(pa)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # load_state_dict would share the tensors
    assert opt_a.state_dict()["state"].keys() == opt_b.state_dict()["state"].keys()
    _train(opt_a, a, 4, seed=2)
    _train(opt_b, b, 4, seed=2)
    for pa, pb in zip(a, b):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7)


@pytest.mark.slow  # compiles
def test_masked_fraction_matches_reference():
    fractions = {}
    for impl in ("compiled", "reference"):
        ps = [torch.nn.Parameter(t) for t in make_params(dtype=torch.float32)]
        opt = Lion(ps, lr=1e-3, cautious="indicator", implementation=impl)
        _train(opt, ps, 3, seed=4)
        fractions[impl] = opt.diagnostics()["masked_fraction"]
    assert 0.0 < fractions["reference"] < 1.0
    assert fractions["compiled"] == pytest.approx(fractions["reference"], abs=1e-9)


def test_auto_switch_and_process_wide_switch():
    every = ("reference", "foreach", "compiled")
    assert resolve("auto", every, COMPILE_MIN_NUMEL) == "compiled"
    assert resolve("auto", every, COMPILE_MIN_NUMEL - 1) == "foreach"
    assert resolve("compiled", every, 1) == "compiled" and resolve("reference", every, COMPILE_MIN_NUMEL) == "reference"
    assert resolve("auto", ("reference",), COMPILE_MIN_NUMEL) == "reference"
    set_compile_enabled(False)
    assert resolve("compiled", every, COMPILE_MIN_NUMEL) == "foreach"
    assert resolve("compiled", ("reference", "compiled"), COMPILE_MIN_NUMEL) == "reference"
    with pytest.raises(ValueError, match="implementation"):
        Lion([torch.nn.Parameter(torch.zeros(2))], implementation="fast")


def test_compiler_failure_falls_back_to_the_eager_path(monkeypatch):
    """A failing compiler (no C++ toolchain, ...) warns, switches compilation off and steps with the foreach path
    (bit-identical to the reference)."""
    from research_optim.optim import compiled

    def failing(fn):
        def run(*args):
            raise torch._dynamo.exc.InternalTorchDynamoError("no compiler here")
        return run

    monkeypatch.setattr(compiled, "_dynamo", failing)
    monkeypatch.setattr(compiled, "_direct", {})  # no graph recorded by an earlier test
    try:
        with pytest.warns(RuntimeWarning, match="eager optimizer steps"):
            run_side_by_side(lambda ps: AdamW(ps, lr=1e-2, cautious="indicator_mean", implementation="compiled"),
                             lambda ps: AdamW(ps, lr=1e-2, cautious="indicator_mean", implementation="reference"),
                             steps=5, dtype=torch.float32, rtol=0.0, atol=0.0)
        assert not compile_enabled()
    finally:
        set_compile_enabled(True)
