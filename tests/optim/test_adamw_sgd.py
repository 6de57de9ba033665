"""The library's AdamW and SGD against torch.optim (float64), C-AdamW against timm ``cadamw``, cautious SGD against
timm ``SGDW(caution=True)``."""
from __future__ import annotations

import pytest
import torch

import timm.optim as timm_optim
from timm.optim.sgdw import SGDW

from research_optim.optim.adamw import AdamW, CautiousAdamW
from research_optim.optim.sgd import SGD

from tests.optim.harness import masked_fraction_log, run_side_by_side

STEPS = 120


# ------------------------------------------------------------------------------------------------------ AdamW
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("betas,eps", [((0.9, 0.999), 1e-8), ((0.8, 0.95), 1e-3)])
def test_adamw_matches_torch(weight_decay, betas, eps):
    run_side_by_side(
        lambda p: AdamW(p, lr=1e-2, betas=betas, eps=eps, weight_decay=weight_decay),
        lambda p: torch.optim.AdamW(p, lr=1e-2, betas=betas, eps=eps, weight_decay=weight_decay, foreach=False),
        steps=STEPS,
    )


def test_adamw_defaults_are_torch_defaults():
    ours = AdamW([torch.nn.Parameter(torch.zeros(1))]).defaults
    ref = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))]).defaults
    for key in ("lr", "betas", "eps", "weight_decay"):
        assert ours[key] == ref[key], key


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("foreach", [False, True])
def test_cadamw_matches_timm_cadamw(weight_decay, foreach):
    log, hook = masked_fraction_log()
    run_side_by_side(
        lambda p: CautiousAdamW(p, lr=1e-2, weight_decay=weight_decay),
        lambda p: timm_optim.create_optimizer_v2(p, "cadamw", lr=1e-2, weight_decay=weight_decay, foreach=foreach,
                                                 filter_bias_and_bn=False),
        steps=STEPS, between_steps=hook,
    )
    assert max(log) > 0.05  # the mask really removed coordinates during the comparison


@pytest.mark.parametrize("implementation", ["reference", "foreach"])
def test_cadamw_masks_from_m_like_timm_when_m_g_underflows(implementation):
    """float32 gradients of ~1e-23: m·g underflows to 0 while u·g would not. Every path masks from m, as timm does."""
    log, hook = masked_fraction_log()
    run_side_by_side(
        lambda p: CautiousAdamW(p, lr=1e-2, weight_decay=0.1, implementation=implementation),
        lambda p: timm_optim.create_optimizer_v2(p, "cadamw", lr=1e-2, weight_decay=0.1, foreach=False,
                                                 filter_bias_and_bn=False),
        steps=20, dtype=torch.float32, rtol=1e-6, atol=1e-7, between_steps=hook,
        grad_fn=lambda p, g: 1e-23 * torch.randn(p.shape, generator=g, dtype=p.dtype),
    )
    assert max(log) > 0.99  # every product underflowed: the mask removed (nearly) everything


def test_cadamw_defaults_are_timm_cadamw_defaults():
    ours = CautiousAdamW([torch.nn.Parameter(torch.zeros(1))])
    ref = timm_optim.AdamWLegacy([torch.nn.Parameter(torch.zeros(1))], caution=True)
    for key in ("lr", "betas", "eps", "weight_decay"):
        assert ours.defaults[key] == ref.defaults[key], key
    assert isinstance(ours, AdamW) and ours.defaults["cautious"] == "indicator_mean"


def test_adamw_param_groups():
    def groups(p):
        return [{"params": p[:3], "lr": 3e-2, "weight_decay": 0.0}, {"params": p[3:], "betas": (0.8, 0.99)}]

    run_side_by_side(
        lambda p: AdamW(groups(p), lr=1e-2, weight_decay=0.2),
        lambda p: torch.optim.AdamW(groups(p), lr=1e-2, weight_decay=0.2, foreach=False),
        steps=60,
    )


def test_adamw_state_buffers():
    p = torch.nn.Parameter(torch.randn(4))
    opt = AdamW([p])
    for _ in range(3):
        p.grad = torch.randn(4)
        opt.step()
    assert set(opt.state[p]) == {"step", "exp_avg", "exp_avg_sq"} and opt.state[p]["step"] == 3


# ------------------------------------------------------------------------------------------------------ SGD
@pytest.mark.parametrize("momentum,nesterov", [(0.9, False), (0.9, True), (0.5, True), (0.0, False)])
def test_sgd_matches_torch(momentum, nesterov):
    run_side_by_side(
        lambda p: SGD(p, lr=1e-2, momentum=momentum, nesterov=nesterov),
        lambda p: torch.optim.SGD(p, lr=1e-2, momentum=momentum, nesterov=nesterov, foreach=False),
        steps=STEPS,
    )


def test_sgd_without_momentum_weight_decay_equals_torch_l2():
    """Without momentum, decoupled decay p·(1 − lr·λ) − lr·g equals torch's L2 form p − lr·(g + λ·p)."""
    run_side_by_side(
        lambda p: SGD(p, lr=1e-2, momentum=0.0, weight_decay=0.3),
        lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.0, weight_decay=0.3, foreach=False),
        steps=STEPS,
    )


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.3])
def test_sgd_decoupled_weight_decay_matches_timm_sgdw(nesterov, weight_decay):
    run_side_by_side(
        lambda p: SGD(p, lr=1e-2, momentum=0.9, nesterov=nesterov, weight_decay=weight_decay),
        lambda p: SGDW(p, lr=1e-2, momentum=0.9, nesterov=nesterov, weight_decay=weight_decay, foreach=False),
        steps=STEPS,
    )


@pytest.mark.parametrize("nesterov", [False, True])
def test_cautious_sgd_matches_timm_sgdw_caution(nesterov):
    log, hook = masked_fraction_log()
    run_side_by_side(
        lambda p: SGD(p, lr=1e-2, momentum=0.9, nesterov=nesterov, weight_decay=0.1, cautious="indicator_mean"),
        lambda p: SGDW(p, lr=1e-2, momentum=0.9, nesterov=nesterov, weight_decay=0.1, caution=True, foreach=False),
        steps=STEPS, between_steps=hook,
    )
    assert max(log) > 0.05


def test_sgd_param_groups():
    def groups(p):
        return [{"params": p[:2], "lr": 0.1}, {"params": p[2:], "momentum": 0.5, "nesterov": True}]

    run_side_by_side(
        lambda p: SGD(groups(p), lr=1e-2, momentum=0.9),
        lambda p: torch.optim.SGD(groups(p), lr=1e-2, momentum=0.9, foreach=False),
        steps=60,
    )


def test_sgd_state_buffers():
    p, q = torch.nn.Parameter(torch.randn(3)), torch.nn.Parameter(torch.randn(3))
    opt = SGD([{"params": [p]}, {"params": [q], "momentum": 0.0}], momentum=0.9)
    p.grad, q.grad = torch.randn(3), torch.randn(3)
    opt.step()
    assert set(opt.state[p]) == {"momentum_buffer"}
    torch.testing.assert_close(opt.state[p]["momentum_buffer"], p.grad)  # b_1 = g, as torch
    assert len(opt.state[q]) == 0  # no buffer without momentum
