"""The rest of the Schedule-Free family against ``schedulefree`` 1.4.1 (float64, 120 steps, rtol 1e-10):
RAdamScheduleFree and AdamWScheduleFreePaper with train/eval switching (ScheduleFreeWrapperReference: with the
wrapper's tests, here its checkpoints over torch AdamW), and the closure
forms (AdamW, SGD, RAdam) driven by the training loop's closure protocol (``protocols.optimizer_step``) and
standalone."""
from __future__ import annotations

import copy

import pytest
import schedulefree
import torch
from torch import nn

from research_optim import protocols
from research_optim.batch_loss import BatchLoss
from research_optim.optim.radam_schedule_free import RAdamScheduleFree, RAdamScheduleFreeClosure, rectification
from research_optim.optim.schedule_free import AdamWScheduleFree, AdamWScheduleFreePaper, SGDScheduleFree
from research_optim.optim.schedule_free_closure import AdamWScheduleFreeClosure, SGDScheduleFreeClosure
from research_optim.optim.schedule_free_wrapper import ScheduleFreeWrapperReference

from tests.optim.harness import SHAPES, run_side_by_side
from tests.optim.test_schedule_free import STEPS, _switching, _training

RADAM_CASES = {
    "defaults": dict(lr=0.01),
    "wd+r+power": dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05, r=1.0, weight_lr_power=1.0),
    "sgd-phase": dict(lr=0.01, weight_decay=0.1, silent_sgd_phase=False),
}
PAPER_CASES = {
    "defaults": dict(),
    "wd+warmup+r+power": dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05, warmup_steps=20, r=1.0,
                              weight_lr_power=1.0),
}


@pytest.mark.parametrize("implementation", ["reference", "foreach"])
@pytest.mark.parametrize("ours, ref, kwargs", [
    *[pytest.param(RAdamScheduleFree, schedulefree.RAdamScheduleFree, kw, id=f"radam-{name}")
      for name, kw in RADAM_CASES.items()],
    *[pytest.param(AdamWScheduleFreePaper, schedulefree.AdamWScheduleFreePaper, kw, id=f"paper-{name}")
      for name, kw in PAPER_CASES.items()],
])
def test_matches_schedulefree_package(ours, ref, kwargs, implementation):
    run_side_by_side(_training(ours, implementation=implementation, **kwargs), _training(ref, **kwargs),
                     steps=STEPS, shapes=SHAPES, dtype=torch.float64, between_steps=_switching)


def test_radam_rectification_phases():
    """Silent phase: no step and no weight in the average while ρ_t ≤ 4 (β2 = 0.999: the first 4 steps)."""
    assert [rectification(0.999, t, True)[1] for t in range(1, 8)] == [False] * 4 + [True] * 3
    assert rectification(0.999, 3, True)[0] == 0.0 and rectification(0.999, 3, False)[0] == 1.0
    p = nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = RAdamScheduleFree([p])
    opt.train()
    for _ in range(4):
        p.grad = torch.ones(3, dtype=torch.float64)
        opt.step()
    assert torch.equal(p.detach(), torch.ones(3, dtype=torch.float64))
    assert opt.param_groups[0]["weight_sum"] == 0.0


def test_wrapper_reference_over_adamw_checkpoint_round_trip():
    """Over torch AdamW (which the package cannot wrap): a state_dict taken in eval mode resumes exactly."""
    def make(params):
        return ScheduleFreeWrapperReference(torch.optim.AdamW(params, lr=0.01), weight_decay_at_y=0.05)

    def run(params, opt, steps):
        for t in steps:
            gen = torch.Generator().manual_seed(t)
            for p in params:
                p.grad = p.detach() + torch.randn(p.shape, generator=gen, dtype=p.dtype)
            opt.step()

    params = [nn.Parameter(torch.randn(s, dtype=torch.float64)) for s in SHAPES]
    opt = make(params)
    opt.train()
    run(params, opt, range(10))
    opt.eval()
    saved, saved_params = copy.deepcopy(opt.state_dict()), [p.detach().clone() for p in params]
    assert set(saved) == {"base", "x", "y", "z"}
    opt.train()
    run(params, opt, range(10, 20))
    resumed_params = [nn.Parameter(p.clone()) for p in saved_params]
    resumed = make(resumed_params)
    resumed.load_state_dict(saved)
    resumed.train()
    run(resumed_params, resumed, range(10, 20))
    assert all(torch.equal(a, b) for a, b in zip(params, resumed_params))


# -- closure forms ----------------------------------------------------------------------------------------------


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3)).double()


def _batch(t: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(t)
    return torch.randn(32, 4, generator=gen, dtype=torch.float64), torch.randint(0, 3, (32,), generator=gen)


def _plain_closure(model: nn.Module, t: int):
    """The closure a user hands the package's classes: zero-grad, loss, backward."""
    x, y = _batch(t)

    def closure() -> torch.Tensor:
        model.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss
    return closure


CLOSURE_PAIRS = [
    (AdamWScheduleFreeClosure, schedulefree.AdamWScheduleFreeClosure, dict(lr=0.01)),
    (AdamWScheduleFreeClosure, schedulefree.AdamWScheduleFreeClosure,
     dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.05, warmup_steps=20, r=1.0, weight_lr_power=1.0)),
    (SGDScheduleFreeClosure, schedulefree.SGDScheduleFreeClosure, dict(lr=0.1, weight_decay=0.01, warmup_steps=10)),
    (RAdamScheduleFreeClosure, schedulefree.RAdamScheduleFreeClosure, dict(lr=0.01, weight_decay=0.05)),
]


@pytest.mark.parametrize("driver", ["training_loop", "standalone"])
@pytest.mark.parametrize("ours_cls, ref_cls, kwargs", CLOSURE_PAIRS, ids=["adamw", "adamw-all", "sgd", "radam"])
def test_closure_forms_match_the_package(ours_cls, ref_cls, kwargs, driver):
    """The package's class with a plain closure (x between steps) against ours either in the training loop —
    train() first, as the Trainer does, then ``protocols.optimizer_step`` each step and the evaluation point read
    through ``protocols.evaluation_mode`` — or standalone as the package's (eval mode, a plain closure)."""
    ours_model = _model()
    ref_model = copy.deepcopy(ours_model)
    ours, ref = ours_cls(ours_model.parameters(), **kwargs), ref_cls(ref_model.parameters(), **kwargs)
    assert protocols.requires_closure(ours) and protocols.has_modes(ours)
    if driver == "training_loop":
        ours.train()
    for t in range(STEPS):
        ref_loss = ref.step(_plain_closure(ref_model, t))
        if driver == "training_loop":
            batch_loss = BatchLoss(lambda x, y: nn.functional.cross_entropy(ours_model(x), y), *_batch(t))
            loss, skipped = protocols.optimizer_step(ours, batch_loss, list(ours_model.parameters()), None,
                                                     skip_nonfinite=True)
            assert not skipped
        else:
            loss = ours.step(_plain_closure(ours_model, t))
        torch.testing.assert_close(loss.detach(), ref_loss.detach(), rtol=1e-10, atol=1e-12)
        with protocols.evaluation_mode(ours):  # x, as the package holds between steps
            for a, b in zip(ours_model.parameters(), ref_model.parameters()):
                torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-10, atol=1e-12,
                                           msg=lambda m, t=t: f"step {t + 1}: {m}")


@pytest.mark.parametrize("closure_cls, fast_cls", [(AdamWScheduleFreeClosure, AdamWScheduleFree),
                                                   (SGDScheduleFreeClosure, SGDScheduleFree),
                                                   (RAdamScheduleFreeClosure, RAdamScheduleFree)])
def test_closure_form_is_the_fast_form(closure_cls, fast_cls):
    """In eval mode a step is train(), the train/eval class's step and eval(); in train mode the train/eval class's
    step — bit for bit. A step without a closure is refused."""
    for in_train_mode in (False, True):
        closure_model, fast_model = _model(), _model()
        closure_opt = closure_cls(closure_model.parameters(), lr=0.01, weight_decay=0.01)
        fast_opt = fast_cls(fast_model.parameters(), lr=0.01, weight_decay=0.01)
        if in_train_mode:
            closure_opt.train()
            fast_opt.train()
        for t in range(30):
            closure_opt.step(_plain_closure(closure_model, t))
            if not in_train_mode:
                fast_opt.train()
            fast_opt.step(_plain_closure(fast_model, t))
            if not in_train_mode:
                fast_opt.eval()
            assert closure_opt.train_mode is in_train_mode
            assert all(torch.equal(a, b) for a, b in zip(closure_model.parameters(), fast_model.parameters()))
    with pytest.raises(RuntimeError, match="closure"):
        closure_opt.step()


@pytest.mark.parametrize("cls", [AdamWScheduleFreeClosure, SGDScheduleFreeClosure, RAdamScheduleFreeClosure])
def test_closure_form_checkpoint_resumes_bit_for_bit(cls):
    """A checkpoint taken between standalone steps (the parameters at x): a fresh model and optimizer restored from
    it continue exactly as the uninterrupted run."""
    def run(model, opt, steps):
        for t in steps:
            opt.step(_plain_closure(model, t))

    model = _model()
    opt = cls(model.parameters(), lr=0.01, weight_decay=0.01)
    run(model, opt, range(12))
    saved = copy.deepcopy({"model": model.state_dict(), "optimizer": opt.state_dict()})
    run(model, opt, range(12, 25))
    resumed = _model()
    resumed.load_state_dict(saved["model"])
    resumed_opt = cls(resumed.parameters(), lr=0.01, weight_decay=0.01)
    resumed_opt.load_state_dict(saved["optimizer"])
    run(resumed, resumed_opt, range(12, 25))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), resumed.parameters()))


@pytest.mark.parametrize("cls, kwargs, argument", [
    (AdamWScheduleFree, dict(inner_momentum=1.0), "inner_momentum"),
    (AdamWScheduleFree, dict(inner_momentum=-0.1), "inner_momentum"),
    (RAdamScheduleFree, dict(silent_sgd_phase="yes"), "silent_sgd_phase"),
    (RAdamScheduleFree, dict(betas=(0.0, 0.999)), "betas\\[0\\]"),
    (RAdamScheduleFree, dict(implementation="compiled"), "implementation"),
    (AdamWScheduleFreePaper, dict(lr=0.0), "lr"),
    (SGDScheduleFreeClosure, dict(momentum=1.0), "momentum"),
])
def test_bad_hyperparameters_raise(cls, kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        cls([nn.Parameter(torch.randn(3))], **kwargs)
