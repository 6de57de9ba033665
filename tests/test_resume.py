"""A run interrupted after a checkpoint and resumed produces the same metrics, bit for bit, as one that was not."""
from __future__ import annotations

import pytest

from tests.conftest import read_metrics, toy_optimizer, without_measurements
from research_optim.train import Trainer

class Interrupted(Exception):
    pass


@pytest.mark.parametrize("optimizer", [
    ["optimizer=adamw", "model.dropout=0.2"],
    ["optimizer=sgd", "schedule=linear"],
    toy_optimizer("ClosureSGD") + ["model.dropout=0.2"],
    toy_optimizer("ModeSGD") + ["model.batch_norm=true"],
    ["optimizer=c_lion", "model.dropout=0.2"],
    ["optimizer=sf_adamw", "model.batch_norm=true", "model.dropout=0.2"],
    ["optimizer=salsa", "model.dropout=0.2"],
    ["optimizer=sls"],
    ["optimizer=adamw", "model.dropout=0.2", "train.micro_batch_size=4"],
    ["optimizer=salsa", "model.dropout=0.2", "train.micro_batch_size=8"],
    ["optimizer=c_muon", "optimizer.ns_dtype=float32", "model.dropout=0.2"],  # float32: bfloat16 GEMMs are slow on CPU
    ["optimizer=sf_muon", "+optimizer.base.ns_dtype=float32", "model.batch_norm=true"],
    ["optimizer=c_adafactor"],
    ["optimizer=sf_adamw_closure", "optimizer.inner_momentum=0.9", "model.batch_norm=true", "model.dropout=0.2"],
], ids=["adamw-dropout", "sgd-linear", "closure", "modes-bn", "c_lion", "sf_adamw-bn", "salsa", "sls",
        "adamw-dropout-micro", "salsa-dropout-micro", "c_muon", "sf_muon-bn", "c_adafactor", "sf_adamw_closure-bn"])
def test_resume_is_bit_exact(tiny_run, tmp_path, monkeypatch, optimizer):
    straight = tiny_run(*optimizer, root=tmp_path / "a")
    assert straight["status"] == "completed"

    original = Trainer.save_checkpoint

    def save_then_die(self, window):
        original(self, window)
        if self.state.step == 20:
            raise Interrupted

    monkeypatch.setattr(Trainer, "save_checkpoint", save_then_die)
    with pytest.raises(Interrupted):
        tiny_run(*optimizer, root=tmp_path / "b")
    monkeypatch.setattr(Trainer, "save_checkpoint", original)
    resumed = tiny_run(*optimizer, root=tmp_path / "b")

    assert resumed["run_dir"].replace(str(tmp_path / "b"), "") == straight["run_dir"].replace(str(tmp_path / "a"), "")
    a, b = read_metrics(straight["run_dir"]), read_metrics(resumed["run_dir"])
    assert without_measurements(a) == without_measurements(b)
    for key in ("train_loss", "val_loss", "val_accuracy", "train_accuracy"):
        assert straight[key] == resumed[key]


def test_rerunning_a_completed_run_does_not_train_again(tiny_run, tmp_path):
    first = tiny_run(root=tmp_path)
    lines = read_metrics(first["run_dir"])
    second = tiny_run(root=tmp_path)
    assert second["run_dir"] == first["run_dir"]
    assert second["val_loss"] == first["val_loss"]
    assert read_metrics(first["run_dir"]) == lines


def test_different_configs_get_different_directories(tiny_run, tmp_path):
    a = tiny_run("seed=1", root=tmp_path)
    b = tiny_run("seed=2", root=tmp_path)
    c = tiny_run("seed=1", "optimizer.lr=0.002", root=tmp_path)
    assert len({a["run_dir"], b["run_dir"], c["run_dir"]}) == 3


def test_a_completed_run_launched_again_returns_its_recorded_outcome_without_training(tiny_run, tmp_path):
    first = tiny_run()
    run_dir = tmp_path / "runs" / "default"
    metrics = [p.read_text() for p in run_dir.glob("*/metrics.jsonl")]
    again = tiny_run()
    assert again == first and again["status"] == "completed"
    assert [p.read_text() for p in run_dir.glob("*/metrics.jsonl")] == metrics  # nothing trained or logged again
    fresh = tiny_run("run.resume=false")
    assert fresh["status"] == "completed" and fresh["train_time"] != first["train_time"]  # run.resume=false trains
