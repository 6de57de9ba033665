"""Tiny end-to-end runs of every model and data kind through the real config tree and training loop.

Data that would come from the hub is written locally by the test (parquet / jsonl through `datasets`), so the real
loading code runs offline.
"""
from __future__ import annotations

import json

import datasets
import numpy as np
import pytest

from tests.conftest import read_metrics

FEW = ["train.steps=4", "train.batch_size=8", "train.eval_every=2", "train.log_every=2", "train.checkpoint_every=4",
       "train.eval_batch_size=64"]


def _completed(summary: dict) -> dict:
    assert summary["status"] == "completed", summary
    assert read_metrics(summary["run_dir"])
    return summary


@pytest.mark.parametrize("model", ["mlp", "resnet18", "vit_t", "vit_s"])
def test_image_models_on_digits(tiny_run, model):
    _completed(tiny_run(f"model={model}", *FEW, "data.val_fraction=0.05"))


def test_vit_b_runs_on_digits(tiny_run):
    _completed(tiny_run("model=vit_b", "train.steps=1", "train.batch_size=4", "train.eval_every=0",
                        "train.log_every=1", "data.val_fraction=0.02", "train.eval_batch_size=64"))


def test_gpt_on_the_synthetic_language_reports_the_gap_to_the_optimum(tiny_run):
    summary = _completed(tiny_run("experiment=lm_synthetic", *FEW, "data.num_train=256", "data.num_val=32"))
    assert summary["val_gap_to_optimum"] > 0
    val = [r for r in read_metrics(summary["run_dir"]) if r["split"] == "val"]
    assert all("gap_to_optimum" in r for r in val)
    assert [r for r in read_metrics(summary["run_dir"]) if r["split"] == "train"][-1]["tokens"] == 4 * 8 * 32


def test_bf16_autocast_runs(tiny_run):
    _completed(tiny_run("train.precision=bf16", *FEW))


@pytest.fixture
def cifar_parquet(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    pixels = rng.integers(0, 256, size=(60, 32, 32, 3), dtype=np.uint8)
    table = datasets.Dataset.from_dict({"img": [Image.fromarray(p) for p in pixels],
                                        "label": [i % 10 for i in range(60)]}, features=features)
    path = tmp_path / "cifar.parquet"
    table.to_parquet(str(path))
    return path


def test_cifar10_from_a_local_parquet_file(tiny_run, cifar_parquet, tmp_path):
    _completed(tiny_run("data=cifar10", f"data.path={cifar_parquet}", "data.val_fraction=0.2", "model=resnet18",
                        f"data.cache_dir={tmp_path / 'cache'}", *FEW))


@pytest.mark.parametrize("streaming", [False, True])
def test_text_corpus_from_local_jsonl(tiny_run, tmp_path, streaming):
    texts = [f"story {i}: once upon a time there was a tiny model number {i}." for i in range(80)]
    path = tmp_path / "stories.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    _completed(tiny_run("data=tinystories", "data.path=json", f"+data.data_files.train={path}",
                        f"data.streaming={str(streaming).lower()}", "data.seq_len=16", "data.max_val_tokens=400",
                        "data.val_fraction=0.2", "data.shuffle_buffer=16", f"data.cache_dir={tmp_path / 'cache'}",
                        "model=gpt", "model.n_layer=1", "model.n_embd=32", "model.n_head=2", *FEW))


def test_missing_local_dataset_path_is_refused_before_anything_is_written(tmp_path):
    from tests.conftest import compose_config
    from research_optim.app import run

    cfg = compose_config([f"run.root={tmp_path / 'runs'}", "data=cifar10", f"data.path={tmp_path / 'nowhere'}"])
    with pytest.raises(Exception, match="data.path"):
        run(cfg)
    assert not (tmp_path / "runs").exists()
