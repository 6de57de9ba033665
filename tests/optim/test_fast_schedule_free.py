"""The fast paths of the memory-efficient Schedule-Free AdamW / SGD equal its per-tensor reference path: foreach bit
for bit, compiled to 1e-6 relative in float32 (every φ, decay on/off, warmup, param groups, train/eval switches,
bf16 parameters and a state_dict round trip between implementations)."""
from __future__ import annotations

import copy

import pytest
import torch

from research_optim.optim.cautious import PHI_FUNCTIONS
from research_optim.optim.schedule_free import AdamWScheduleFree, AdamWScheduleFreePaper, SGDScheduleFree
from tests.optim.harness import FAST_PATHS, make_params, run_side_by_side

pytestmark = [pytest.mark.skipif(not torch._dynamo.is_dynamo_supported(), reason="torch.compile unavailable"),
              pytest.mark.usefixtures("compilation_on")]

RULES = {
    "adamw": lambda ps, **kw: AdamWScheduleFree(ps, lr=1e-2, warmup_steps=3, **kw),
    "adamw-inner-momentum": lambda ps, **kw: AdamWScheduleFree(ps, lr=1e-2, warmup_steps=3, inner_momentum=0.9, **kw),
    "adamw-paper": lambda ps, **kw: AdamWScheduleFreePaper(ps, lr=1e-2, warmup_steps=3, **kw),
    "sgd": lambda ps, **kw: SGDScheduleFree(ps, lr=1e-2, warmup_steps=3, **kw),
}
# a cautious mask only where it means something: over the inner momentum (else refused, test_schedule_free)
RULE_PHIS = [(rule, phi) for rule in sorted(RULES)
             for phi in ([None, *sorted(PHI_FUNCTIONS)] if rule == "adamw-inner-momentum" else [None])]


def _train_mode(ps_optimizer):
    ps_optimizer.train()
    return ps_optimizer


def _switch_modes(t, ours, ref):
    """eval() and back every few steps, as the training loop does around evaluations."""
    if t % 4 == 0:
        for opt in (ours, ref):
            opt.eval()
            opt.train()


@pytest.mark.parametrize("implementation,tolerance", FAST_PATHS)
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("rule, phi", RULE_PHIS)
def test_fast_path_equals_reference(rule, phi, weight_decay, implementation, tolerance):
    kw = dict(weight_decay=weight_decay, cautious=phi, cautious_factor=0.3 if phi == "soft" else 0.0)
    run_side_by_side(lambda ps: _train_mode(RULES[rule](ps, implementation=implementation, **kw)),
                     lambda ps: _train_mode(RULES[rule](ps, implementation="reference", **kw)), steps=12,
                     between_steps=_switch_modes, **tolerance)


@pytest.mark.parametrize("implementation,tolerance", FAST_PATHS)
def test_param_groups(implementation, tolerance):
    def make(impl):
        return lambda ps: _train_mode(AdamWScheduleFree(
            [{"params": ps[:2], "weight_decay": 0.1},
             {"params": ps[2:], "lr": 3e-3, "cautious": "indicator", "inner_momentum": 0.9}],
            lr=1e-2, implementation=impl))
    run_side_by_side(make(implementation), make("reference"), steps=10, **tolerance)


@pytest.mark.slow  # compiles
def test_bfloat16_params():
    ps_fast = [torch.nn.Parameter(t.to(torch.bfloat16)) for t in make_params(dtype=torch.float32)]
    ps_ref = [torch.nn.Parameter(t.detach().clone()) for t in ps_fast]
    fast = _train_mode(SGDScheduleFree(ps_fast, lr=1e-2, weight_decay=0.1, implementation="compiled"))
    ref = _train_mode(SGDScheduleFree(ps_ref, lr=1e-2, weight_decay=0.1, implementation="reference"))
    gen = torch.Generator().manual_seed(3)
    for _ in range(5):
        for a, b in zip(ps_fast, ps_ref):
            a.grad = torch.randn(a.shape, generator=gen).to(torch.bfloat16)
            b.grad = a.grad.clone()
        fast.step()
        ref.step()
    for a, b in zip(ps_fast, ps_ref):
        assert a.dtype == torch.bfloat16 and fast.state[a]["z"].dtype == torch.bfloat16
        torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=2e-2)


@pytest.mark.slow  # compiles
def test_state_dict_round_trip_in_eval_mode():
    init = make_params(dtype=torch.float32)
    a = [torch.nn.Parameter(t.clone()) for t in init]
    b = [torch.nn.Parameter(t.clone()) for t in init]
    opt_a = _train_mode(AdamWScheduleFree(a, lr=1e-2, implementation="compiled"))

    def train(opt, ps, steps, seed):
        g = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            for p in ps:
                p.grad = p.detach() + torch.randn(p.shape, generator=g)
            opt.step()

    train(opt_a, a, 4, seed=1)
    opt_a.eval()  # checkpoints are taken at x
    opt_b = AdamWScheduleFree(b, lr=1e-2, implementation="reference")
    with torch.no_grad():
        for pb, pa in zip(b, a):
            pb.copy_(pa)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    for opt in (opt_a, opt_b):
        opt.train()
    train(opt_a, a, 4, seed=2)
    train(opt_b, b, 4, seed=2)
    for pa, pb in zip(a, b):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7)
