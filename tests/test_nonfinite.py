"""Non-finite steps: `train.nonfinite=stop` stops at the next log line, `skip` skips the step before the optimizer
touches anything (plain and closure optimizers), and neither ever lets a non-finite value into a checkpoint."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.conftest import read_metrics
from research_optim import checkpoint, protocols
from research_optim.batch_loss import BatchLoss
from research_optim.optim import SaLSA


def nan_losses(monkeypatch, calls: set[int] | None = None, after: int | None = None) -> None:
    """Make the training loss NaN at the given loss computations (1-based), or from ``after`` + 1 on."""
    from research_optim import train as train_module

    real, count = train_module.loss_and_correct, {"n": 0}

    def patched(logits, targets):
        loss, correct = real(logits, targets)
        if torch.is_grad_enabled():
            count["n"] += 1
            if (calls and count["n"] in calls) or (after is not None and count["n"] > after):
                loss = loss * float("nan")
        return loss, correct

    monkeypatch.setattr(train_module, "loss_and_correct", patched)


def all_finite(tree) -> bool:
    if isinstance(tree, torch.Tensor):
        return not tree.is_floating_point() or bool(torch.isfinite(tree).all())
    if isinstance(tree, dict):
        return all(all_finite(v) for v in tree.values())
    if isinstance(tree, (list, tuple)):
        return all(all_finite(v) for v in tree)
    return not isinstance(tree, float) or tree == tree and abs(tree) != float("inf")


def checkpoints_on_disk(run_dir: str) -> list[dict]:
    folder = Path(run_dir, "checkpoints")
    return [checkpoint.load(folder / name) for name in (checkpoint.LAST, checkpoint.PREV) if (folder / name).exists()]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_trainer, monkeypatch):
    nan_losses(monkeypatch, after=25)
    trainer, summary = tiny_trainer("train.checkpoint_every=10", "train.log_every=5", "train.eval_every=0")
    assert summary["status"] == "diverged"
    assert "loss became nan by step 30" in summary["error"] and "last good checkpoint (step 20)" in summary["error"]
    assert "grad_clip" not in summary["error"]  # clipping is on: the hint does not ask to enable it
    assert json.loads(Path(summary["run_dir"], "summary.json").read_text())["status"] == "diverged"
    ckpt = checkpoint.load(trainer.ckpt_dir / checkpoint.LAST)
    assert ckpt["state"]["step"] == 20
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_divergence_hint_asks_for_clipping_only_when_it_is_off(tiny_run, monkeypatch):
    nan_losses(monkeypatch, after=5)
    assert "enable train.grad_clip" in tiny_run("train.grad_clip=null")["error"]


def test_skipped_steps_are_counted_per_log_line_and_in_the_summary(tiny_trainer, monkeypatch):
    nan_losses(monkeypatch, calls={12, 13, 14, 33})
    trainer, summary = tiny_trainer("train.nonfinite=skip", "train.eval_every=0")
    assert summary["status"] == "completed" and summary["skipped_steps"] == 4
    train = [r for r in read_metrics(summary["run_dir"]) if r["split"] == "train"]
    assert [(r["step"], r["skipped"]) for r in train] == [(10, 0), (20, 3), (30, 0), (40, 1)]
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    saved = json.loads(Path(summary["run_dir"], "summary.json").read_text())
    assert saved["final"]["skipped_steps"] == 4


@pytest.mark.parametrize("overrides", [
    ["optimizer=adamw", "optimizer.lr=1e3"],            # plain: the parameters blow up, then every loss is NaN
    ["optimizer=salsa", "optimizer.init_step_size=1e30"],  # closure: the line search cannot tame the first step
], ids=["adamw", "salsa"])
def test_skip_with_a_diverging_step_size_stops_as_diverged_with_finite_checkpoints(tiny_run, overrides):
    summary = tiny_run(*overrides, "train.nonfinite=skip", "train.checkpoint_every=1", "train.log_every=1",
                       "train.eval_every=0", "train.max_consecutive_skips=4")
    assert summary["status"] == "diverged", summary
    assert "4 steps in a row" in summary["error"]
    saved = json.loads(Path(summary["run_dir"], "summary.json").read_text())
    skipped = sum(r["skipped"] for r in read_metrics(summary["run_dir"]) if r["split"] == "train")
    assert saved["final"]["skipped_steps"] == skipped + 1 >= 4  # the step that ended the run had no log line
    ckpts = checkpoints_on_disk(summary["run_dir"])
    assert ckpts and all(all_finite(c["model"]) and all_finite(c["optimizer"]) for c in ckpts)


def test_an_overflowing_update_is_never_checkpointed(tiny_run):
    """A finite loss and gradient, but the update overflows float32 (lr · (g + wd·p) > 3.4e38): the run stops
    instead of saving inf parameters — in stop mode too, where the step's (finite) loss raises no alarm."""
    overflow = ["optimizer=sgd", "optimizer.lr=3e38", "optimizer.momentum=0", "optimizer.nesterov=false",
                "optimizer.weight_decay=10", "train.steps=1"]
    for nonfinite in ("stop", "skip"):
        summary = tiny_run(*overflow, f"train.nonfinite={nonfinite}", f"run.group={nonfinite}")
        assert summary["status"] == "diverged", summary
        assert "non-finite" in summary["error"]
        assert not checkpoints_on_disk(summary["run_dir"])


def _model_and_batch():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    return model, torch.randn(16, 4), torch.randn(16, 1)


def _batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, scale: float = 1.0) -> BatchLoss:
    return BatchLoss(lambda x, y: nn.functional.mse_loss(model(x), y) * scale, x, y)


@pytest.mark.parametrize("make", [
    lambda params: torch.optim.AdamW(params, lr=1e-2),
    lambda params: SaLSA(params, init_step_size=1e-1),
], ids=["adamw", "salsa"])
def test_a_skipped_step_leaves_parameters_and_optimizer_state_untouched(make):
    model, x, y = _model_and_batch()
    params = list(model.parameters())
    optimizer = make(params)
    batch = _batch(model, x, y)
    for _ in range(3):
        assert protocols.optimizer_step(optimizer, batch, params, 1.0, skip_nonfinite=True)[1] is False
    before_params = [p.detach().clone() for p in params]
    before_state = str(optimizer.state_dict())
    nan_batch = _batch(model, x, y, scale=float("nan"))
    assert protocols.optimizer_step(optimizer, nan_batch, params, 1.0, skip_nonfinite=True)[1] is True
    assert all(torch.equal(a, b) for a, b in zip(before_params, params))
    assert str(optimizer.state_dict()) == before_state


def test_the_closure_protocol_computes_the_first_evaluation_once():
    """The loss and gradient the loop computes before step() are the closure's first evaluation: a SaLSA step
    through optimizer_step equals SaLSA stepping with a plain closure, bit for bit."""
    model, x, y = _model_and_batch()
    twin, _, _ = _model_and_batch()
    ours, theirs = SaLSA(model.parameters(), init_step_size=0.1), SaLSA(twin.parameters(), init_step_size=0.1)
    params = list(model.parameters())
    for _ in range(5):
        protocols.optimizer_step(ours, _batch(model, x, y), params, None)

        def closure(backwards: bool = True):
            if not backwards:
                with torch.no_grad():
                    return nn.functional.mse_loss(twin(x), y)
            theirs.zero_grad()
            value = nn.functional.mse_loss(twin(x), y)
            value.backward()
            return value.detach()

        theirs.step(closure)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))


@pytest.mark.slow
def test_a_diverged_run_exits_1(tmp_path):
    out = subprocess.run([sys.executable, "-m", "research_optim", "optimizer.lr=1e3", "train.nonfinite=skip",
                          "train.steps=40", "train.progress=false", "train.eval_every=0", f"run.root={tmp_path}"],
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "run diverged" in out.stdout and "in a row" in out.stdout
