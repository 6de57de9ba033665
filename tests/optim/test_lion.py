"""Lion and C-Lion against timm (``lion``, ``clion``) and lion-pytorch (plain and ``cautious_factor``), float64,
120 steps on the harness's tensors of rank 1, 2 and 4."""
from __future__ import annotations

import pytest
import torch

import lion_pytorch
import timm.optim as timm_optim
from lion_pytorch.cautious_lion import Lion as LionPytorchCautious

from research_optim.optim.lion import CautiousLion, Lion

from tests.optim.harness import masked_fraction_log, run_side_by_side

STEPS = 120


@pytest.mark.parametrize("weight_decay", [0.0, 0.3])
@pytest.mark.parametrize("foreach", [False, True])
def test_lion_matches_timm(weight_decay, foreach):
    run_side_by_side(
        lambda p: Lion(p, lr=3e-2, betas=(0.9, 0.99), weight_decay=weight_decay),
        lambda p: timm_optim.create_optimizer_v2(p, "lion", lr=3e-2, betas=(0.9, 0.99), weight_decay=weight_decay,
                                                 foreach=foreach, filter_bias_and_bn=False),
        steps=STEPS,
    )


@pytest.mark.parametrize("weight_decay", [0.0, 0.3])
@pytest.mark.parametrize("betas", [(0.9, 0.99), (0.95, 0.98)])
def test_lion_matches_lion_pytorch(weight_decay, betas):
    # lion-pytorch computes β·m + (1−β)·g with mul/add where we (and timm) use lerp: equal up to the last bits.
    run_side_by_side(
        lambda p: Lion(p, lr=1e-2, betas=betas, weight_decay=weight_decay),
        lambda p: lion_pytorch.Lion(p, lr=1e-2, betas=betas, weight_decay=weight_decay),
        steps=STEPS, rtol=1e-12, atol=1e-12,
    )


@pytest.mark.parametrize("weight_decay", [0.0, 0.3])
def test_clion_matches_timm_clion(weight_decay):
    log, hook = masked_fraction_log()
    run_side_by_side(
        lambda p: CautiousLion(p, lr=3e-2, weight_decay=weight_decay),
        lambda p: timm_optim.create_optimizer_v2(p, "clion", lr=3e-2, weight_decay=weight_decay, foreach=False,
                                                 filter_bias_and_bn=False),
        steps=STEPS, between_steps=hook,
    )
    # the comparison only means something if the mask actually removed coordinates
    assert max(log) > 0.05


@pytest.mark.parametrize("cautious_factor", [0.0, 0.5])
@pytest.mark.parametrize("weight_decay", [0.0, pytest.param(0.3, marks=pytest.mark.slow)])  # a long comparison each
def test_soft_phi_matches_lion_pytorch_cautious_factor(cautious_factor, weight_decay):
    log, hook = masked_fraction_log()
    run_side_by_side(
        lambda p: Lion(p, lr=1e-2, weight_decay=weight_decay, cautious="soft", cautious_factor=cautious_factor),
        lambda p: LionPytorchCautious(p, lr=1e-2, weight_decay=weight_decay, cautious_factor=cautious_factor),
        steps=STEPS, rtol=1e-12, atol=1e-12, between_steps=hook,
    )
    assert max(log) > 0.05


def test_lion_float32_matches_timm_tightly():
    run_side_by_side(
        lambda p: Lion(p, lr=1e-2, weight_decay=0.1),
        lambda p: timm_optim.Lion(p, lr=1e-2, weight_decay=0.1, foreach=False),
        steps=STEPS, dtype=torch.float32, rtol=1e-6, atol=1e-7,
    )


def test_param_groups_with_different_lr_and_weight_decay():
    def groups(p):
        return [{"params": p[:2], "lr": 3e-2, "weight_decay": 0.5}, {"params": p[2:], "lr": 1e-3}]

    run_side_by_side(
        lambda p: Lion(groups(p), lr=1e-2, weight_decay=0.1, cautious="indicator_mean"),
        lambda p: timm_optim.Lion(groups(p), lr=1e-2, weight_decay=0.1, caution=True, foreach=False),
        steps=60,
    )


def test_cautious_option_per_param_group():
    """Caution is a group option: a group may switch it off (timm groups with caution False/True)."""
    def ours(p):
        return Lion([{"params": p[:2], "cautious": None}, {"params": p[2:]}], lr=1e-2, cautious="indicator_mean")

    def ref(p):
        return timm_optim.Lion([{"params": p[:2], "caution": False}, {"params": p[2:]}], lr=1e-2, caution=True,
                               foreach=False)

    run_side_by_side(ours, ref, steps=60)


def test_defaults_and_single_state_buffer():
    p = torch.nn.Parameter(torch.randn(3, 2))
    opt = Lion([p])
    assert opt.defaults["lr"] == 1e-4 and opt.defaults["betas"] == (0.9, 0.99)
    assert opt.defaults["weight_decay"] == 0.0 and opt.defaults["cautious"] is None
    p.grad = torch.randn(3, 2)
    opt.step()
    assert set(opt.state[p]) == {"exp_avg"}
    assert opt.diagnostics() == {}  # no masked_fraction without caution


def test_clion_preset_is_lion_with_indicator_mean():
    p = torch.nn.Parameter(torch.zeros(2))
    opt = CautiousLion([p])
    assert isinstance(opt, Lion) and opt.defaults["cautious"] == "indicator_mean"
    assert opt.defaults["lr"] == 1e-4 and opt.defaults["betas"] == (0.9, 0.99)


def test_update_is_lr_times_sign_on_first_step():
    """First step: m = 0, so c = (1 − β1)·g and the update is −lr·sign(g); m then becomes (1 − β2)·g."""
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64))
    opt = Lion([p], lr=0.1, betas=(0.9, 0.99), weight_decay=0.5)
    p.grad = torch.tensor([0.2, -0.3, 0.0], dtype=torch.float64)
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([0.95 - 0.1, -1.9 + 0.1, 2.85], dtype=torch.float64))
    torch.testing.assert_close(opt.state[p]["exp_avg"], torch.tensor([0.002, -0.003, 0.0], dtype=torch.float64))

