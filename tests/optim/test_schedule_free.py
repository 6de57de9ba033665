"""Schedule-Free AdamW/SGD (fast and reference) against ``schedulefree`` 1.4.1, float64, and against each other.

Covers: equality with the package's fast and Reference classes (shapes, wd, warmup, r, weight_lr_power, eval/train
switching mid-run with p compared in both modes), fast == our reference, checkpoint round trips in train and eval
mode (the schedulefree#32 scenario: save in eval mode, load into a fresh model and optimizer, train(), continue),
eval-mode ``step()`` refusal, hyperparameter validation, state memory, cautious masking and diagnostics.
"""
from __future__ import annotations

import io

import pytest
import torch

import hydra
import schedulefree
from hydra.utils import instantiate
from omegaconf import OmegaConf

from research_optim.app import CONFIG_DIR
from research_optim.optim.radam_schedule_free import RAdamScheduleFree, RAdamScheduleFreeClosure
from research_optim.optim.schedule_free import AdamWScheduleFree, AdamWScheduleFreePaper, SGDScheduleFree
from research_optim.optim.schedule_free_closure import AdamWScheduleFreeClosure, SGDScheduleFreeClosure
from research_optim.optim.schedule_free_reference import (
    AdamWScheduleFreeReference,
    SGDScheduleFreeReference,
)
from research_optim.optim.schedule_free_wrapper import ScheduleFreeWrapper, ScheduleFreeWrapperReference

from tests.optim.harness import SHAPES, run_side_by_side

STEPS = 120
SWITCH_EVERY = 25


def _switching(t: int, ours, ref) -> None:
    """Every SWITCH_EVERY steps: eval() both (twice: idempotent), compare x, then train() both and compare y."""
    if t % SWITCH_EVERY:
        return
    for opt in (ours, ref, ours, ref):
        opt.eval()
    _assert_params_equal(ours, ref, f"x after eval() at step {t}")
    for opt in (ours, ref, ours, ref):
        opt.train()
    _assert_params_equal(ours, ref, f"y after train() at step {t}")


def _assert_params_equal(ours, ref, what: str, rtol: float = 1e-10, atol: float = 1e-12) -> None:
    for group_a, group_b in zip(ours.param_groups, ref.param_groups):
        for a, b in zip(group_a["params"], group_b["params"]):
            torch.testing.assert_close(a.detach(), b.detach(), rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


def _training(cls, **kwargs):
    def make(params):
        opt = cls(params, **kwargs)
        opt.train()
        return opt

    return make


ADAMW_CASES = {
    "defaults": dict(),
    "wd": dict(lr=0.01, weight_decay=0.1),
    "warmup": dict(lr=0.02, warmup_steps=30),
    "wd+warmup+r+power": dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05, warmup_steps=20, r=1.0,
                              weight_lr_power=1.0),
}
SGD_CASES = {
    "defaults": dict(lr=0.1),
    "wd": dict(lr=0.1, weight_decay=0.1),
    "warmup": dict(lr=0.2, warmup_steps=30),
    "wd+warmup+r+power": dict(lr=0.1, momentum=0.8, weight_decay=0.05, warmup_steps=20, r=0.5,
                              weight_lr_power=3.0),
}
PAIRS = [
    (AdamWScheduleFree, schedulefree.AdamWScheduleFree, ADAMW_CASES),
    (AdamWScheduleFreeReference, schedulefree.AdamWScheduleFreeReference, ADAMW_CASES),
    (SGDScheduleFree, schedulefree.SGDScheduleFree, SGD_CASES),
    (SGDScheduleFreeReference, schedulefree.SGDScheduleFreeReference, SGD_CASES),
]
PACKAGE_CASES = [pytest.param(ours, ref, kwargs, id=f"{ours.__name__}-{name}")
                 for ours, ref, cases in PAIRS for name, kwargs in cases.items()]


@pytest.mark.parametrize("ours, ref, kwargs", PACKAGE_CASES)
def test_matches_schedulefree_package(ours, ref, kwargs, capsys):
    run_side_by_side(_training(ours, **kwargs), _training(ref, **kwargs), steps=STEPS, shapes=SHAPES,
                     dtype=torch.float64, between_steps=_switching)
    capsys.readouterr()  # the package's Reference classes print on every mode switch


@pytest.mark.parametrize("fast, reference, kwargs", [
    (AdamWScheduleFree, AdamWScheduleFreeReference, ADAMW_CASES["wd+warmup+r+power"]),
    (SGDScheduleFree, SGDScheduleFreeReference, SGD_CASES["wd+warmup+r+power"]),
    (AdamWScheduleFree, AdamWScheduleFreeReference, dict(lr=0.01, weight_decay=0.1, inner_momentum=0.9)),
    (AdamWScheduleFree, AdamWScheduleFreeReference, dict(lr=0.01, weight_decay=0.1, inner_momentum=0.9,
                                                         cautious="indicator_mean")),
    (AdamWScheduleFree, AdamWScheduleFreeReference, dict(lr=0.01, weight_decay=0.1, inner_momentum=0.5,
                                                         cautious="soft", cautious_factor=0.3)),
], ids=["adamw", "sgd", "adamw-inner-momentum", "adamw-cautious", "adamw-cautious-soft"])
def test_fast_equals_reference(fast, reference, kwargs):
    run_side_by_side(_training(fast, **kwargs), _training(reference, **kwargs), steps=STEPS,
                     grad_fn=_sparse_noisy_grad, between_steps=_switching)


def _sparse_noisy_grad(p: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """p + noise with about a third of the coordinates exactly zero (so cautious masks have work to do)."""
    g = p.detach() + 0.5 * torch.randn(p.shape, generator=gen, dtype=p.dtype)
    keep = torch.rand(p.shape, generator=gen, dtype=p.dtype) > 1 / 3
    return g * keep


# -- checkpoints ------------------------------------------------------------------------------------------------------


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()


def _train_steps(model, opt, steps: range) -> None:
    for t in steps:
        gen = torch.Generator().manual_seed(1000 + t)  # the batch depends on the step only
        x = torch.randn(16, 4, generator=gen, dtype=torch.float64)
        target = torch.randn(16, 3, generator=gen, dtype=torch.float64)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), target).backward()
        opt.step()


def _roundtrip(obj_state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(obj_state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


CHECKPOINT_CASES = [
    (AdamWScheduleFree, dict(lr=0.01, weight_decay=0.1, warmup_steps=5)),
    (SGDScheduleFree, dict(lr=0.1, weight_decay=0.1, warmup_steps=5)),
    (AdamWScheduleFreeReference, dict(lr=0.01, weight_decay=0.1, warmup_steps=5)),
    (SGDScheduleFreeReference, dict(lr=0.1, weight_decay=0.1, warmup_steps=5)),
    (AdamWScheduleFree, dict(lr=0.01, weight_decay=0.1, inner_momentum=0.9, cautious="indicator_mean")),
    (AdamWScheduleFreeReference, dict(lr=0.01, weight_decay=0.1, inner_momentum=0.9)),
    (AdamWScheduleFreePaper, dict(lr=0.01, weight_decay=0.1, warmup_steps=5)),
    (RAdamScheduleFree, dict(lr=0.01, weight_decay=0.1)),
]


@pytest.mark.parametrize("cls, kwargs", CHECKPOINT_CASES, ids=lambda v: getattr(v, "__name__", ""))
@pytest.mark.parametrize("save_mode", ["eval", "train"])
@pytest.mark.parametrize("train_before_load", [False, True])
def test_checkpoint_resume_equals_uninterrupted(cls, kwargs, save_mode, train_before_load):
    """Save mid-run (eval mode: schedulefree#32's scenario; or train mode), restore into a fresh model and optimizer,
    train() and continue: bit-identical to the uninterrupted run, in both modes at the end."""
    model, opt = _model(), None
    opt = cls(model.parameters(), **kwargs)
    opt.train()
    _train_steps(model, opt, range(0, 12))
    getattr(opt, save_mode)()
    checkpoint = _roundtrip({"model": model.state_dict(), "optimizer": opt.state_dict()})
    opt.train()
    _train_steps(model, opt, range(12, 25))

    resumed = _model()
    with torch.no_grad():
        for p in resumed.parameters():
            p.add_(1.0)  # make sure the weights really come from the checkpoint
    resumed_opt = cls(resumed.parameters(), **kwargs)
    if train_before_load:  # a loop that switches the fresh optimizer to train mode before it restores
        resumed_opt.train()
    resumed.load_state_dict(checkpoint["model"])
    resumed_opt.load_state_dict(checkpoint["optimizer"])
    assert resumed_opt.train_mode == (save_mode == "train")
    resumed_opt.train()
    _train_steps(resumed, resumed_opt, range(12, 25))

    for mode in ("train", "eval"):
        getattr(opt, mode)()
        getattr(resumed_opt, mode)()
        for a, b in zip(model.parameters(), resumed.parameters()):
            assert torch.equal(a, b), f"{mode} mode parameters differ after resuming"


def test_load_rejects_state_that_does_not_fit_the_parameters():
    """schedulefree#32's crash (a z of another shape) is a clear error at load time, not at the next train()."""
    a = [torch.nn.Parameter(torch.randn(3)), torch.nn.Parameter(torch.randn(5))]
    opt = AdamWScheduleFree(a)
    opt.train()
    for p in a:
        p.grad = torch.ones_like(p)
    opt.step()
    opt.eval()
    b = [torch.nn.Parameter(torch.randn(5)), torch.nn.Parameter(torch.randn(3))]  # other order
    with pytest.raises(ValueError, match="shape"):
        AdamWScheduleFree(b).load_state_dict(opt.state_dict())


# -- modes, errors, memory, diagnostics ----------------------------------------------------------------------------

ALL = [AdamWScheduleFree, SGDScheduleFree, AdamWScheduleFreeReference, SGDScheduleFreeReference]


@pytest.mark.parametrize("cls", ALL)
def test_starts_in_eval_mode_and_step_refuses_eval_mode(cls):
    p = torch.nn.Parameter(torch.randn(4))
    p.grad = torch.ones(4)
    opt = cls([p])
    assert opt.train_mode is False  # as in schedulefree 1.4.1: train() must come first
    with pytest.raises(RuntimeError, match="train\\(\\)"):
        opt.step()
    opt.train()
    opt.step()
    opt.eval()
    with pytest.raises(RuntimeError, match="eval mode"):
        opt.step()


@pytest.mark.parametrize("cls, kwargs, argument", [
    (AdamWScheduleFree, dict(lr=0.0), "lr"),
    (AdamWScheduleFree, dict(lr=-1.0), "lr"),
    (AdamWScheduleFree, dict(betas=(0.0, 0.999)), "betas\\[0\\]"),
    (AdamWScheduleFree, dict(betas=(1.0, 0.999)), "betas\\[0\\]"),
    (AdamWScheduleFree, dict(betas=(0.9, 1.0)), "betas\\[1\\]"),
    (AdamWScheduleFree, dict(betas=(0.9,)), "betas"),
    (AdamWScheduleFree, dict(eps=-1e-8), "eps"),
    (AdamWScheduleFree, dict(weight_decay=-0.1), "weight_decay"),
    (AdamWScheduleFree, dict(warmup_steps=-1), "warmup_steps"),
    (AdamWScheduleFree, dict(warmup_steps=2.5), "warmup_steps"),
    (AdamWScheduleFree, dict(r=-1.0), "r must"),
    (AdamWScheduleFree, dict(weight_lr_power=-2.0), "weight_lr_power"),
    (AdamWScheduleFree, dict(cautious="nope"), "cautious"),
    (AdamWScheduleFree, dict(cautious="soft", cautious_factor=2.0), "cautious_factor"),
    (SGDScheduleFree, dict(momentum=0.0), "momentum must be in \\(0, 1\\) .*no average.*lib_sgd"),
    (AdamWScheduleFree, dict(implementation="fast"), "implementation"),
    (SGDScheduleFree, dict(momentum=1.0), "momentum"),
    (SGDScheduleFree, dict(lr=0.0), "lr"),
    (AdamWScheduleFreeReference, dict(betas=(0.0, 0.9)), "betas\\[0\\]"),
    (SGDScheduleFreeReference, dict(momentum=1.5), "momentum"),
    (SGDScheduleFreeReference, dict(weight_decay=-1.0), "weight_decay"),
])
def test_bad_hyperparameters_raise(cls, kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        cls([torch.nn.Parameter(torch.randn(3))], **kwargs)


def test_defaults_match_the_paper_and_package():
    p = [torch.nn.Parameter(torch.randn(3))]
    adamw, sgd = AdamWScheduleFree(p).defaults, SGDScheduleFree(p).defaults
    assert {k: adamw[k] for k in ("lr", "betas", "eps", "weight_decay", "warmup_steps", "r", "weight_lr_power")} == \
        dict(lr=0.0025, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, warmup_steps=0, r=0.0, weight_lr_power=2.0)
    assert (sgd["lr"], sgd["momentum"]) == (1.0, 0.9)


@pytest.mark.parametrize("cls, keys", [
    (AdamWScheduleFree, {"z", "exp_avg_sq"}),
    (SGDScheduleFree, {"z"}),
    (AdamWScheduleFreeReference, {"x", "y", "z", "exp_avg_sq"}),
    (SGDScheduleFreeReference, {"x", "y", "z"}),
])
def test_state_memory(cls, keys):
    """The fast versions keep only z (+ v): the base optimizer's memory; the references also keep x and y."""
    params = [torch.nn.Parameter(torch.randn(s)) for s in SHAPES]
    opt = cls(params)
    opt.train()
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()
    for p in params:
        assert set(opt.state[p]) == keys
        assert all(t.shape == p.shape and t.dtype == p.dtype for t in opt.state[p].values())
    n_state = sum(t.numel() for s in opt.state.values() for t in s.values())
    assert n_state == len(keys) * sum(p.numel() for p in params)


def test_added_param_group_joins_in_the_current_mode():
    a, b = torch.nn.Parameter(torch.randn(3)), torch.nn.Parameter(torch.randn(2))
    opt = SGDScheduleFree([a], lr=0.1)
    opt.train()
    opt.add_param_group({"params": [b]})
    assert opt.train_mode is True
    a.grad, b.grad = torch.ones(3), torch.ones(2)
    opt.step()  # would raise if the new group were in eval mode


def test_diagnostics_lr_applied_with_warmup_and_xy_gap():
    shapes = ((5, 3), (7,))
    params = [torch.nn.Parameter(torch.randn(s, dtype=torch.float64)) for s in shapes]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    fast = AdamWScheduleFree(params, lr=0.01, warmup_steps=10, weight_decay=0.1)
    ref = AdamWScheduleFreeReference(twins, lr=0.01, warmup_steps=10, weight_decay=0.1)
    fast.train()
    ref.train()
    gen = torch.Generator().manual_seed(3)
    for t in range(1, 16):
        for p, q in zip(params, twins):
            p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            q.grad = p.grad.clone()
        fast.step()
        ref.step()
        diag = fast.diagnostics()
        assert diag["lr_applied"] == pytest.approx(0.01 * min(1.0, t / 10), rel=1e-12)
        explicit = torch.sqrt(sum((ref.state[q]["x"] - ref.state[q]["y"]).square().sum() for q in twins))
        assert (explicit > 0) == (t > 1)  # c_1 = 1 puts x = y = z after the first step
        assert diag["xy_gap"] == pytest.approx(float(explicit), rel=1e-9, abs=1e-15)
        assert ref.diagnostics()["xy_gap"] == pytest.approx(float(explicit), rel=1e-12, abs=1e-15)
    fast.eval()  # same gap read from the other side
    assert fast.diagnostics()["xy_gap"] == pytest.approx(float(explicit), rel=1e-9)
    assert "masked_fraction" not in diag


@pytest.mark.parametrize("cls, kwargs, fix", [
    (AdamWScheduleFree, {}, "inner_momentum > 0"), (AdamWScheduleFreeReference, {}, "inner_momentum > 0"),
    (SGDScheduleFree, {}, "momentum"), (SGDScheduleFreeReference, {}, "momentum"),
    (AdamWScheduleFree, dict(inner_momentum=0.0), "inner_momentum > 0"),
])
def test_cautious_without_a_momentum_is_refused(cls, kwargs, fix):
    """u has the sign of g everywhere: a mask would only drop g = 0 coordinates — refused, naming the fix."""
    with pytest.raises(ValueError, match=f"cautious='indicator_mean' would mean nothing.*{fix}"):
        cls([torch.nn.Parameter(torch.randn(3))], cautious="indicator_mean", **kwargs)
    opt = cls([torch.nn.Parameter(torch.randn(3))], **kwargs)
    with pytest.raises(ValueError, match="would mean nothing"):  # also a group added later
        opt.add_param_group({"params": [torch.nn.Parameter(torch.randn(2))], "cautious": "soft"})


def test_cautious_over_the_inner_momentum_masks_and_changes_the_trajectory():
    """With inner_momentum the z direction has m's signs: with dense gradients (no zeros) the mask drops the
    coordinates where m̂ and g disagree — exactly those, counted in masked_fraction — and the trajectory leaves the
    unmasked one."""
    shapes = ((40,), (10, 6))
    init = [torch.randn(s, dtype=torch.float64) for s in shapes]
    plain_p = [torch.nn.Parameter(t.clone()) for t in init]
    caut_p = [torch.nn.Parameter(t.clone()) for t in init]
    plain = AdamWScheduleFree(plain_p, lr=0.01, inner_momentum=0.9)
    caut = AdamWScheduleFree(caut_p, lr=0.01, inner_momentum=0.9, cautious="indicator_mean")
    plain.train()
    caut.train()
    gen = torch.Generator().manual_seed(5)
    fractions = []
    for _ in range(20):
        for p, q in zip(plain_p, caut_p):
            p.grad = p.detach() + 2.0 * torch.randn(p.shape, generator=gen, dtype=p.dtype)
            q.grad = q.detach() + (p.grad - p.detach())  # same noise, at the cautious run's own point
            assert (q.grad != 0).all()
        caut_m_before = [caut.state[q]["exp_avg"].clone() if q in caut.state else torch.zeros_like(q)
                         for q in caut_p]
        plain.step()
        caut.step()
        disagree = sum(int(((m * 0.9 + 0.1 * q.grad) * q.grad <= 0).sum()) for m, q in zip(caut_m_before, caut_p))
        fractions.append(caut.diagnostics()["masked_fraction"])
        assert fractions[-1] == pytest.approx(disagree / sum(q.numel() for q in caut_p))
    assert max(fractions) > 0.05
    assert all(not torch.allclose(p, q) for p, q in zip(plain_p, caut_p))


@pytest.mark.parametrize("name, cls", [("sf_adamw", AdamWScheduleFree), ("sf_sgd", SGDScheduleFree),
                                       ("sf_wrapper", ScheduleFreeWrapper),
                                       ("sf_wrapper_reference", ScheduleFreeWrapperReference),
                                       ("sf_adamw_closure", AdamWScheduleFreeClosure),
                                       ("sf_sgd_closure", SGDScheduleFreeClosure),
                                       ("sf_adamw_paper", AdamWScheduleFreePaper),
                                       ("sf_radam", RAdamScheduleFree), ("sf_radam_closure", RAdamScheduleFreeClosure)])
def test_configs_select_a_constant_schedule_and_build(name, cls):
    """conf/optimizer/<name>.yaml overrides the schedule to constant and builds through instantiate(node)(groups)."""
    with hydra.initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = hydra.compose(config_name="config", overrides=[f"optimizer={name}"])
    assert cfg.schedule.name == "constant"
    node = OmegaConf.to_container(cfg.optimizer, resolve=True)
    node.pop("name")
    model = torch.nn.Linear(3, 2)
    opt = instantiate(node, _convert_="all")([{"params": [model.weight]}, {"params": [model.bias], "weight_decay": 0.0}])
    assert type(opt) is cls
    assert opt.train_mode is False and opt.param_groups[1]["weight_decay"] == 0.0
