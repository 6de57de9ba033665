"""Every optimizer config trains the default experiment through the real config tree and the training loop."""
from __future__ import annotations

import pytest

from tests.conftest import read_metrics
from tests.test_config import choices

# bfloat16 GEMMs are ~10x slower than float32 on a CPU: Muon's compositions run Newton–Schulz in float32 here (the
# muon and salsa_muon configs keep torch's bfloat16)
FLOAT32_NS = {"c_muon": ("optimizer.ns_dtype=float32",), "sf_muon": ("+optimizer.base.ns_dtype=float32",)}


@pytest.mark.parametrize("optimizer", choices("optimizer"))
def test_each_optimizer_lowers_the_loss(tiny_run, optimizer):
    summary = tiny_run(f"optimizer={optimizer}", *FLOAT32_NS.get(optimizer, ()), "train.steps=60", "train.eval_every=0")
    assert summary["status"] == "completed", summary
    train = [r for r in read_metrics(summary["run_dir"]) if r["split"] == "train"]
    assert train[-1]["loss"] < train[0]["loss"], (optimizer, train[0]["loss"], train[-1]["loss"])


@pytest.mark.parametrize("optimizer, diagnostic", [
    ("c_adamw", "opt/masked_fraction"), ("c_lion", "opt/masked_fraction"),
    ("salsa", "opt/step_size"), ("sls", "opt/step_size"), ("sf_adamw", "opt/xy_gap"),
    ("c_muon", "opt/masked_fraction"), ("salsa_muon", "opt/step_size"), ("sf_muon", "opt/xy_gap"),
    ("c_adafactor", "opt/masked_fraction"), ("c_sf_adamw", "opt/masked_fraction"),
])
def test_optimizer_diagnostics_reach_metrics(tiny_run, optimizer, diagnostic):
    summary = tiny_run(f"optimizer={optimizer}", *FLOAT32_NS.get(optimizer, ()), "train.eval_every=0")
    train = [r for r in read_metrics(summary["run_dir"]) if r["split"] == "train"]
    assert all(diagnostic in r for r in train), train[0].keys()
