"""ScheduleFreeWrapper (and its Reference, x, y, z stored) against ``schedulefree.ScheduleFreeWrapper`` (and
``ScheduleFreeWrapperReference``) 1.4.1 (float64), against pytorch-optimizer's
wrapper over torch AdamW, against our AdamWScheduleFree (the same algorithm when the base is AdamW with β1 = 0),
checkpoint round trips, validation and the Hydra config.

The package's wrappers keep z inside the base's state, so torch's Adam/AdamW/RMSprop (which initialise only an
empty state) fail under them with ``KeyError: 'exp_avg'``; the package comparisons therefore use SGD (with and
without momentum, with decay at z) and Adagrad as bases, and torch AdamW is covered by the other two references.
"""
from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

import hydra.utils as hydra_utils
import pytorch_optimizer.optimizer.schedulefree as kozistr
import schedulefree
from omegaconf import OmegaConf

from research_optim.optim.lion import Lion
from research_optim.optim.schedule_free import AdamWScheduleFree
from research_optim.optim.schedule_free_wrapper import (
    ScheduleFreeWrapper, ScheduleFreeWrapperReference, schedule_free_wrapped,
)

from tests.optim.harness import SHAPES, run_side_by_side

STEPS = 120


def _switching(t: int, ours, ref) -> None:
    if t % 25:
        return
    for mode in ("eval", "eval", "train", "train"):  # twice each: idempotent
        getattr(ours, mode)()
        getattr(ref, mode)()
        for a, b in zip(ours.param_groups[0]["params"], ref.param_groups[0]["params"]):
            torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-10, atol=1e-12,
                                       msg=lambda m: f"{mode} mode at step {t}: {m}")


def _wrapped(wrapper_cls, base_cls, base_kwargs, wrapper_kwargs):
    def make(params):
        opt = wrapper_cls(base_cls(params, **base_kwargs), **wrapper_kwargs)
        opt.train()
        return opt

    return make


@pytest.mark.parametrize("base_cls, base_kwargs, wrapper_kwargs", [
    (torch.optim.SGD, dict(lr=0.1), dict()),
    (torch.optim.SGD, dict(lr=0.1, momentum=0.5, weight_decay=0.01), dict(weight_decay_at_y=0.1)),
    (torch.optim.SGD, dict(lr=0.05), dict(momentum=0.8, r=1.0, weight_lr_power=1.0, weight_decay_at_y=0.05)),
    (torch.optim.Adagrad, dict(lr=0.1), dict(weight_decay_at_y=0.1)),
], ids=["sgd", "sgd-momentum-wd", "sgd-r-power", "adagrad"])
@pytest.mark.parametrize("ours, ref", [(ScheduleFreeWrapper, schedulefree.ScheduleFreeWrapper),
                                       (ScheduleFreeWrapperReference, schedulefree.ScheduleFreeWrapperReference)],
                         ids=["wrapper", "reference"])
def test_matches_schedulefree_wrapper(base_cls, base_kwargs, wrapper_kwargs, ours, ref):
    base_kwargs = dict(base_kwargs, foreach=False)
    run_side_by_side(_wrapped(ours, base_cls, base_kwargs, wrapper_kwargs),
                     _wrapped(ref, base_cls, base_kwargs, wrapper_kwargs),
                     steps=STEPS, shapes=SHAPES, between_steps=_switching)


def test_matches_pytorch_optimizer_wrapper_over_torch_adamw():
    base_kwargs = dict(lr=0.01, weight_decay=0.01)  # decay at z, by the base
    run_side_by_side(_wrapped(ScheduleFreeWrapper, torch.optim.AdamW, base_kwargs, dict(momentum=0.9)),
                     _wrapped(kozistr.ScheduleFreeWrapper, torch.optim.AdamW, base_kwargs, dict(momentum=0.9)),
                     steps=STEPS, between_steps=_switching)


def test_over_adamw_without_momentum_is_schedule_free_adamw():
    """Wrapper(AdamW(β1 = 0, no decay), momentum β, weight_decay_at_y λ) == AdamWScheduleFree(β, λ)."""
    def wrapped(params):
        opt = ScheduleFreeWrapper(torch.optim.AdamW(params, lr=0.01, betas=(0.0, 0.99), weight_decay=0.0),
                                  momentum=0.85, weight_decay_at_y=0.1)
        opt.train()
        return opt

    def direct(params):
        opt = AdamWScheduleFree(params, lr=0.01, betas=(0.85, 0.99), weight_decay=0.1)
        opt.train()
        return opt

    # torch divides √v by √(1 − β2^t) where the direct rule takes √(v / (1 − β2^t)): rounding-level differences
    run_side_by_side(wrapped, direct, steps=STEPS, rtol=1e-9, atol=1e-11, between_steps=_switching)


def test_wraps_the_library_lion():
    kwargs = dict(lr=1e-3, weight_decay=0.1)
    run_side_by_side(_wrapped(ScheduleFreeWrapper, Lion, kwargs, dict(momentum=0.9)),
                     _wrapped(kozistr.ScheduleFreeWrapper, Lion, kwargs, dict(momentum=0.9)),
                     steps=60, between_steps=_switching)


def test_state_is_z_only_and_base_state_is_the_bases():
    params = [torch.nn.Parameter(torch.randn(s)) for s in SHAPES]
    opt = ScheduleFreeWrapper(torch.optim.AdamW(params, lr=0.01))
    opt.train()
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()
    for p in params:
        assert set(opt.state[p]) == {"z"} and opt.state[p]["z"].shape == p.shape
        assert {"exp_avg", "exp_avg_sq"} <= set(opt.base.state[p])
    assert opt.param_groups is opt.base.param_groups


@pytest.mark.parametrize("save_mode", ["eval", "train"])
def test_checkpoint_resume_equals_uninterrupted(save_mode):
    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()

    def make(m):
        return ScheduleFreeWrapper(torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.01),
                                   weight_decay_at_y=0.05)

    def run(m, opt, steps):
        for t in steps:
            gen = torch.Generator().manual_seed(t)
            x = torch.randn(16, 4, generator=gen, dtype=torch.float64)
            y = torch.randn(16, 3, generator=gen, dtype=torch.float64)
            opt.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
            opt.step()

    m = model()
    opt = make(m)
    opt.train()
    run(m, opt, range(10))
    getattr(opt, save_mode)()
    buf = io.BytesIO()
    torch.save({"model": m.state_dict(), "optimizer": opt.state_dict()}, buf)
    opt.train()
    run(m, opt, range(10, 20))

    buf.seek(0)
    checkpoint = torch.load(buf, weights_only=True)
    m2 = model()
    opt2 = make(m2)
    opt2.train()
    m2.load_state_dict(checkpoint["model"])
    opt2.load_state_dict(checkpoint["optimizer"])
    assert opt2.train_mode == (save_mode == "train")
    opt2.train()
    run(m2, opt2, range(10, 20))
    for mode in ("train", "eval"):
        getattr(opt, mode)()
        getattr(opt2, mode)()
        for a, b in zip(m.parameters(), m2.parameters()):
            assert torch.equal(a, b), f"{mode} mode parameters differ after resuming"


def test_step_in_eval_mode_raises_and_bad_arguments_raise():
    p = torch.nn.Parameter(torch.randn(3))
    p.grad = torch.ones(3)
    opt = ScheduleFreeWrapper(torch.optim.SGD([p], lr=0.1))
    with pytest.raises(RuntimeError, match="eval mode"):
        opt.step()
    for kwargs, argument in [(dict(momentum=0.0), "momentum"), (dict(momentum=1.0), "momentum"),
                             (dict(weight_decay_at_y=-1.0), "weight_decay_at_y"), (dict(r=-1.0), "r must"),
                             (dict(weight_lr_power=-1.0), "weight_lr_power")]:
        with pytest.raises(ValueError, match=argument):
            ScheduleFreeWrapper(torch.optim.SGD([p], lr=0.1), **kwargs)
    with pytest.raises(TypeError, match="base"):
        ScheduleFreeWrapper([p])
    with pytest.raises(ValueError, match="already schedule-free"):
        ScheduleFreeWrapper(AdamWScheduleFree([p]))


def test_diagnostics_and_lr_scheduler_share_the_base_groups():
    p = torch.nn.Parameter(torch.randn(6))
    opt = ScheduleFreeWrapper(torch.optim.SGD([p], lr=0.1))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5)
    assert opt.base.param_groups[0]["lr"] == pytest.approx(0.05)
    opt.train()
    p.grad = torch.ones(6)
    opt.step()
    sched.step()
    p.grad = torch.ones(6)
    opt.step()
    diag = opt.diagnostics()
    assert diag["lr_applied"] == pytest.approx(0.05)
    # after two equal SGD steps: z = p0 − 2·lr·g, x = mean(z1, z2) = p0 − 1.5·lr·g: ‖x − y‖ = (1 − β)·‖z − x‖
    assert diag["xy_gap"] == pytest.approx(0.1 * 0.5 * 0.05 * 6**0.5, rel=1e-6)


def test_config_instantiates_the_wrapper():
    node = OmegaConf.load(Path(__file__).resolve().parents[2] / "conf" / "optimizer" / "sf_wrapper.yaml")
    node = OmegaConf.create({k: v for k, v in node.items() if k not in ("defaults", "name")})
    model = torch.nn.Linear(3, 2)
    groups = [{"params": [model.weight]}, {"params": [model.bias], "weight_decay": 0.0}]
    opt = hydra_utils.instantiate(node, _convert_="all")(groups)
    assert isinstance(opt, ScheduleFreeWrapper) and isinstance(opt.base, torch.optim.AdamW)
    assert opt.base.param_groups[0]["betas"][0] == 0.0 and opt.momentum == 0.9
    # the base can also be named by its config name, with its arguments apart
    by_name = schedule_free_wrapped(model.parameters(), "sgd", base_kwargs=dict(lr=0.1), momentum=0.8)
    assert isinstance(by_name.base, torch.optim.SGD) and by_name.momentum == 0.8
    with pytest.raises(ValueError, match="unknown base 'torch.optim.SGD'.*'lib_sgd'"):
        schedule_free_wrapped(model.parameters(), "torch.optim.SGD")
