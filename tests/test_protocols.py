"""The three optimizer protocols of the training loop, exercised with the toy optimizers."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.conftest import toy_optimizer
from research_optim import checkpoint, protocols


def test_closure_protocol_sees_same_batch_and_dropout(tiny_trainer):
    trainer, summary = tiny_trainer(*toy_optimizer("ClosureSGD"), "model.dropout=0.3")
    assert summary["status"] == "completed"
    evals = trainer.optimizer.evaluations
    assert len(evals) == 40
    for loss, again, moved in evals:
        assert loss == again  # same batch and same dropout mask: bit-identical
    assert any(moved != loss for loss, _, moved in evals)


def test_plain_optimizer_is_not_driven_by_closure():
    assert not protocols.requires_closure(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1))
    assert not protocols.has_modes(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1))


def test_mode_protocol_evaluates_and_checkpoints_in_eval_mode(tiny_trainer):
    trainer, summary = tiny_trainer(*toy_optimizer("ModeSGD"))
    opt = trainer.optimizer
    assert summary["status"] == "completed"
    assert opt.training, "training must resume in train mode"
    # evals at 20 and 40, checkpoints at 20 and 40, final train-split eval: 5 eval/train pairs
    assert opt.mode_log == ["eval", "train"] * 5
    saved = checkpoint.load(trainer.ckpt_dir / checkpoint.LAST)["model"]
    for name, p in trainer.model.named_parameters():
        torch.testing.assert_close(saved[name], p.detach() + 0.5, rtol=0, atol=1e-6)


def test_batch_norm_recomputed_only_for_mode_optimizers(tiny_trainer, monkeypatch):
    calls = []
    original = protocols.recompute_batch_norm
    monkeypatch.setattr(protocols, "recompute_batch_norm", lambda *a, **k: (calls.append(1), original(*a, **k)))
    tiny_trainer(*toy_optimizer("ModeSGD"), "model.batch_norm=true")
    assert len(calls) == 3  # evals at 20, 40 and the final train-split eval
    calls.clear()
    tiny_trainer("model.batch_norm=true")
    assert calls == []


def test_recompute_batch_norm_gives_exact_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm1d(3), nn.Linear(3, 2))
    model[0].running_mean.fill_(10.0)
    batches = [(torch.randn(8, 3) * 2 + 1, torch.zeros(8)) for _ in range(4)]
    model.eval()
    protocols.recompute_batch_norm(model, iter(batches), n=4, forward=model)
    xs = torch.cat([b[0] for b in batches])
    torch.testing.assert_close(model[0].running_mean, xs.mean(0))
    # momentum=None averages the per-batch unbiased variances
    torch.testing.assert_close(model[0].running_var, torch.stack([b[0].var(0) for b in batches]).mean(0))
    assert model[0].momentum == 0.1 and not model.training


@pytest.mark.parametrize("phase", ["eval", "train"])
def test_mode_sgd_refuses_step_in_eval(phase):
    from tests.toy_optimizers import ModeSGD

    opt = ModeSGD([nn.Parameter(torch.zeros(2))])
    opt.eval()
    with pytest.raises(RuntimeError, match="eval mode"):
        opt.step()


def test_a_compiled_optimizer_step_is_announced_before_the_first_step(tmp_path, monkeypatch, capfd):
    from tests.conftest import TINY, compose_config
    from research_optim import distributed
    from research_optim.train import Trainer, compiles_step

    monkeypatch.setenv("RESEARCH_OPTIM_COMPILE", "1")
    lion = [*TINY, f"run.root={tmp_path}", "optimizer=lion", "optimizer.implementation=compiled"]
    trainer = Trainer(compose_config(lion), distributed.setup("cpu"))
    assert compiles_step(trainer.optimizer)
    trainer.announce_compile()  # no step is run: nothing is compiled here
    assert "train.compile_optimizer=false" in capfd.readouterr().err
    for quiet in (["train.compile_optimizer=false"], ["optimizer.implementation=auto"]):  # off; too small to pay
        assert not compiles_step(Trainer(compose_config([*lion, *quiet]), distributed.setup("cpu")).optimizer)
    assert not compiles_step(Trainer(compose_config([*TINY, "optimizer=salsa"]), distributed.setup("cpu")).optimizer)


def test_two_trainers_in_one_process_keep_their_own_compile_choice(tmp_path, monkeypatch):
    """train.compile_optimizer is this run's choice, made when its optimizer is built: a second Trainer does not
    change the first one's (nor the process-wide switch); RESEARCH_OPTIM_COMPILE=0 still turns compilation off."""
    from tests.conftest import TINY, compose_config
    from research_optim import distributed
    from research_optim.optim.implementation import compile_enabled
    from research_optim.train import Trainer, compiles_step

    monkeypatch.setenv("RESEARCH_OPTIM_COMPILE", "1")
    lion = [*TINY, f"run.root={tmp_path}", "optimizer=lion", "optimizer.implementation=compiled"]
    eager = Trainer(compose_config([*lion, "train.compile_optimizer=false"]), distributed.setup("cpu"))
    compiled = Trainer(compose_config(lion), distributed.setup("cpu"))
    assert not compiles_step(eager.optimizer) and eager.optimizer.implementation == "foreach"
    assert compiles_step(compiled.optimizer) and compile_enabled()
    monkeypatch.setenv("RESEARCH_OPTIM_COMPILE", "0")
    assert not compiles_step(compiled.optimizer)
