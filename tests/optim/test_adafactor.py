"""Adafactor against torch.optim.Adafactor (bit for bit), its first-moment and cautious variant against the rule
written out by hand, checks and configs (checkpoints and pickling: test_direction_contract.py)."""
from __future__ import annotations


import pytest
import torch
from torch import nn

from research_optim.build import build_data, build_model, build_optimizer
from research_optim.optim.adafactor import Adafactor, CautiousAdafactor
from tests.conftest import compose_config
from tests.optim.harness import SHAPES, make_params, run_side_by_side

STEPS = 120
CASES = {
    "defaults": dict(),
    "lr+wd": dict(lr=0.05, weight_decay=0.1),
    "eps+d+decay": dict(eps=(1e-30, 1e-2), d=2.0, beta2_decay=-0.5),
}


@pytest.mark.parametrize("dtype", [pytest.param(torch.float32, marks=pytest.mark.slow), torch.float64])  # fast tier: one
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_torch_adafactor_bit_for_bit(dtype, case):
    # SHAPES: vectors (a full second moment), a matrix and a 4-D tensor (factored over the last two dimensions)
    run_side_by_side(lambda ps: Adafactor(ps, **CASES[case]), lambda ps: torch.optim.Adafactor(ps, **CASES[case]),
                     steps=STEPS, shapes=SHAPES, dtype=dtype, rtol=0.0, atol=0.0)


class _HandWritten:
    """Adafactor with a first moment of the clipped update and the indicator_mean mask, written out per tensor."""

    def __init__(self, params, lr, beta1, cautious):
        self.params, self.lr, self.beta1, self.cautious = params, lr, beta1, cautious
        self.t = 0
        self.v = [torch.zeros(p.shape[:-1] + (1,) if p.dim() > 1 else p.shape, dtype=p.dtype) for p in params]
        self.c = [torch.zeros(p.shape[:-2] + (1, p.shape[-1]), dtype=p.dtype) if p.dim() > 1 else None
                  for p in params]
        self.m = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self):
        self.t += 1
        for p, r, c, m in zip(self.params, self.v, self.c, self.m):
            g, eps1 = p.grad, torch.finfo(p.dtype).eps
            w = self.t ** -0.8
            if p.dim() > 1:
                r.mul_(1 - w).add_(w * (g * g).mean(-1, keepdim=True))
                c.mul_(1 - w).add_(w * (g * g).mean(-2, keepdim=True))
                v_hat = r * c / r.mean(-2, keepdim=True).clamp(min=eps1)
            else:
                r.mul_(1 - w).add_(w * g * g)
                v_hat = r
            u = g / v_hat.clamp(min=eps1 ** 2).sqrt()
            u = u / max(1.0, (u.square().mean().sqrt()).item())
            m.mul_(self.beta1).add_((1 - self.beta1) * u)
            d = m
            if self.cautious:
                keep = (m * g > 0).to(p.dtype)
                d = m * keep / keep.mean().clamp(min=1e-3)
            alpha = max(1e-3, p.square().mean().sqrt().item()) * min(self.lr, self.t ** -0.5)
            p.sub_(alpha * d)


@pytest.mark.parametrize("cautious", [False, True])
def test_first_moment_and_cautious_mask_follow_the_rule_written_out(cautious):
    ours = (lambda ps: CautiousAdafactor(ps, lr=0.05)) if cautious else (lambda ps: Adafactor(ps, lr=0.05, beta1=0.9))
    run_side_by_side(ours, lambda ps: _HandWritten(ps, 0.05, 0.9, cautious), steps=STEPS, shapes=SHAPES,
                     rtol=1e-9, atol=1e-12)


def test_cautious_reports_the_masked_fraction_and_changes_the_trajectory():
    params = [nn.Parameter(t) for t in make_params(SHAPES)]
    twins = [nn.Parameter(p.detach().clone()) for p in params]
    cautious, plain = CautiousAdafactor(params), Adafactor(twins, beta1=0.9)
    gen = torch.Generator().manual_seed(3)
    for _ in range(10):
        for p, q in zip(params, twins):
            p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            q.grad = p.grad.clone()
        cautious.step()
        plain.step()
    assert 0.0 < cautious.diagnostics()["masked_fraction"] < 1.0
    assert plain.diagnostics() == {}
    assert any(not torch.equal(p, q) for p, q in zip(params, twins))


@pytest.mark.parametrize("kwargs,name", [
    (dict(lr=0.0), "lr"), (dict(beta2_decay=0.1), "beta2_decay"), (dict(eps=(None,)), "eps"),
    (dict(eps=(-1.0, 1e-3)), r"eps\[0\]"), (dict(eps=(None, -1.0)), r"eps\[1\]"), (dict(d=0.5), "d must"),
    (dict(weight_decay=-0.1), "weight_decay"), (dict(beta1=1.0), "beta1"),
    (dict(cautious="indicator_mean"), "needs beta1"), (dict(implementation="foreach"), "implementation"),
])
def test_bad_hyperparameters_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Adafactor([nn.Parameter(torch.zeros(3, 2))], **kwargs)


@pytest.mark.parametrize("name,cls,beta1", [("adafactor", Adafactor, None), ("c_adafactor", CautiousAdafactor, 0.9)])
def test_configs_build(name, cls, beta1):
    cfg = compose_config([f"optimizer={name}"])
    opt = build_optimizer(cfg.optimizer, build_model(cfg.model, build_data(cfg.data)),
                          cfg.train.weight_decay_norm_and_bias)
    assert type(opt) is cls and opt.defaults["beta1"] == beta1 and opt.defaults["eps"] == [None, 1e-3]
