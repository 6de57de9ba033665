"""Throughput, MFU and memory in metrics.jsonl; torch.compile of the model (CPU, tiny). The models' FLOP counts are
tested in tests/models/test_llama_model.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import read_metrics, without_measurements
from research_optim import throughput
from research_optim.data.base import DataSpec
from research_optim.models.gpt import GPT


def test_peak_flops_come_from_the_key_or_the_table_and_never_for_a_cpu():
    cpu = torch.device("cpu")
    assert throughput.peak_tflops(cpu, "bf16", None) is None
    assert throughput.peak_tflops(cpu, "bf16", 50) == 50.0
    assert throughput.known_peak_tflops("NVIDIA H200", "bf16") == 989.0
    assert throughput.known_peak_tflops("NVIDIA H100 PCIe", "fp32") == 51.0  # before the plain H100 entry
    assert throughput.known_peak_tflops("NVIDIA A100-SXM4-80GB", "bf16") == 312.0
    assert throughput.known_peak_tflops("NVIDIA GeForce GTX 1080", "bf16") is None
    rates = throughput.rates(examples=100, seconds=2.0, tokens_per_example=8, flops_per_example=1e9, peak=10.0,
                             devices=2)
    assert rates == {"examples_per_s": 50.0, "tokens_per_s": 400.0, "mfu": pytest.approx(50 * 1e9 / 20e12)}


def test_log_lines_carry_throughput_memory_and_mfu(tiny_run, tmp_path):
    lm = ["experiment=lm_synthetic", "train.steps=20", "train.eval_every=10", "train.log_every=5",
          "train.checkpoint_every=0", "train.peak_tflops=0.5"]
    summary = tiny_run(*lm)
    train = [r for r in read_metrics(summary["run_dir"]) if r["split"] == "train"]
    assert len(train) == 4
    model = GPT(DataSpec("lm", (32,), 32), n_layer=2, n_head=4, n_embd=64)  # the experiment's model
    for row in train:
        assert row["examples_per_s"] > 0 and row["tokens_per_s"] == pytest.approx(32 * row["examples_per_s"])
        assert row["mfu"] == pytest.approx(model.train_flops_per_example() * row["examples_per_s"] / 0.5e12)
        assert 0 < row["peak_memory_gib"] < 64
    final = json.loads(Path(summary["run_dir"], "summary.json").read_text())["final"]
    assert final["examples_per_s"] == pytest.approx(final["examples"] / final["train_time"])
    assert len(final["peak_memory_gib_per_rank"]) == 1 and final["mfu"] > 0
    # the MLP defines no FLOP count and a CPU has no known peak: no MFU, never a guessed one
    plain = read_metrics(tiny_run(root=tmp_path / "mlp")["run_dir"])
    assert all("mfu" not in r and "tokens_per_s" not in r for r in plain)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_compiled_model_trains_like_the_eager_one(tiny_trainer, tmp_path):
    _, eager = tiny_trainer("model.dropout=0", "train.steps=20", root=tmp_path)
    trainer, compiled = tiny_trainer("model.dropout=0", "train.steps=20", "train.compile_model=true", root=tmp_path)
    assert isinstance(trainer.net, torch._dynamo.eval_frame.OptimizedModule) and compiled["status"] == "completed"
    assert compiled["run_dir"] != eager["run_dir"]  # compiled kernels round differently: another run
    a, b = (without_measurements(read_metrics(r["run_dir"])) for r in (eager, compiled))
    assert [(r["step"], r["split"]) for r in a] == [(r["step"], r["split"]) for r in b]
    for ra, rb in zip(a, b):  # inductor fuses the ops: the same computation, rounded differently
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5), (ra, rb)
