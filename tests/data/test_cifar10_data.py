"""CIFAR-10 loading from local copies with the hub's column layout (img: PIL image, label: ClassLabel)."""
from __future__ import annotations

import os

os.environ["HF_DATASETS_OFFLINE"] = "1"  # never reach the hub from tests

import numpy as np
import pytest
import torch

datasets = pytest.importorskip("datasets")

from research_optim.data.cifar10 import CIFAR10_MEAN, CIFAR10_STD, load_cifar10  # noqa: E402

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


def _split(count: int, seed: int):
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES)})
    return datasets.Dataset.from_dict(
        {"img": [Image.fromarray(p) for p in pixels], "label": [i % 10 for i in range(count)]}, features=features
    ), pixels


def _expected(pixels: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)) / torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)


def test_save_to_disk_folder_with_train_and_test(tmp_path):
    train, train_pixels = _split(24, seed=0)
    test, test_pixels = _split(8, seed=1)
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "cifar"))
    data = load_cifar10(path=str(tmp_path / "cifar"), limit=20)
    assert data.spec.task == "classification" and data.spec.input_shape == (3, 32, 32) and data.spec.num_classes == 10
    assert data.train.inputs.shape == (20, 3, 32, 32) and data.train.inputs.dtype == torch.float32
    torch.testing.assert_close(data.train.inputs, _expected(train_pixels[:20]))
    torch.testing.assert_close(data.val.inputs, _expected(test_pixels))
    assert data.train.targets.tolist() == [i % 10 for i in range(20)]
    assert data.val.targets.dtype == torch.long


def test_single_parquet_file_holds_out_a_seeded_validation_fraction(tmp_path):
    train, pixels = _split(40, seed=2)
    train.to_parquet(str(tmp_path / "cifar.parquet"))
    kwargs = dict(path=str(tmp_path / "cifar.parquet"), val_fraction=0.25, cache_dir=str(tmp_path / "cache"))
    data = load_cifar10(**kwargs)
    again = load_cifar10(**kwargs)
    assert len(data.train) == 30 and len(data.val) == 10
    torch.testing.assert_close(data.val.inputs, again.val.inputs)
    # train and val partition the file's images
    every = torch.cat([data.train.inputs, data.val.inputs]).flatten(1)
    reference = _expected(pixels).flatten(1)
    matches = torch.cdist(every, reference).argmin(1)
    assert sorted(matches.tolist()) == list(range(40))


def test_missing_local_path_names_the_config_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.path=.*does not exist"):
        load_cifar10(path=str(tmp_path / "no_such_folder"))


def test_wrong_column_names_are_reported(tmp_path):
    train, _ = _split(4, seed=3)
    datasets.DatasetDict({"train": train.rename_column("img", "image"), "test": train}).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(ValueError, match=r"data columns \['img'\] not found"):
        load_cifar10(path=str(tmp_path / "d"))
