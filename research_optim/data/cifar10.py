"""CIFAR-10 (Krizhevsky 2009) through Hugging Face ``datasets``: 50 000 train / 10 000 test 32×32 RGB images.

The hub copy 'uoft-cs/cifar10' has columns ``img`` (PIL image) and ``label`` (ClassLabel, 10 names) and splits
train/test. ``path`` may instead point at a local copy with the same columns (a ``save_to_disk`` folder, a
folder of parquet files, or one parquet file) — for clusters without internet.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from research_optim.data.base import DataSpec, Dataset, TensorDataset
from research_optim.data.hf_source import open_source

# Per-channel statistics of the CIFAR-10 training images (pixel values in [0, 1]).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def images_to_tensor(images: list, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """PIL images → (N, 3, H, W) float32, scaled to [0, 1] then normalised per channel."""
    arrays = np.stack([np.asarray(image.convert("RGB"), dtype=np.uint8) for image in images])
    x = torch.from_numpy(arrays).permute(0, 3, 1, 2).float().div_(255.0)
    return (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


def _split_to_tensors(split, image_column: str, label_column: str, limit: int | None, mean, std) -> TensorDataset:
    missing = {image_column, label_column} - set(split.column_names)
    if missing:
        raise ValueError(
            f"data columns {sorted(missing)} not found; the data has {split.column_names} "
            f"(set data.image_column / data.label_column)"
        )
    if limit is not None:
        split = split.select(range(min(limit, len(split))))
    images, labels = [], []
    for batch in split.iter(batch_size=2048):
        images.append(images_to_tensor(batch[image_column], mean, std))
        labels.append(torch.as_tensor(batch[label_column], dtype=torch.long))
    return TensorDataset(torch.cat(images), torch.cat(labels))


def load_cifar10(
    path: str = "uoft-cs/cifar10",
    config_name: str | None = None,
    train_split: str = "train",
    val_split: str = "test",
    val_fraction: float = 0.1,
    split_seed: int = 0,
    limit: int | None = None,
    val_limit: int | None = None,
    image_column: str = "img",
    label_column: str = "label",
    num_classes: int = 10,
    cache_dir: str | None = None,
) -> Dataset:
    """Normalised (3, 32, 32) images and int64 labels.

    Validation is ``val_split`` when the source has it; otherwise a seeded ``val_fraction`` of the train split.
    ``limit`` / ``val_limit`` keep the first examples only (quick runs).
    """
    splits = open_source(path, config_name, cache_dir=cache_dir)
    if train_split not in splits:
        raise ValueError(f"data.train_split={train_split!r} not in the source's splits {list(splits)}")
    train = splits[train_split]
    if val_split in splits:
        val = splits[val_split]
    else:
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
        held_out = train.train_test_split(test_size=val_fraction, seed=split_seed)
        train, val = held_out["train"], held_out["test"]
    features = train.features.get(label_column)
    classes = getattr(features, "num_classes", None) or num_classes
    mean, std = CIFAR10_MEAN, CIFAR10_STD
    train_tensors = _split_to_tensors(train, image_column, label_column, limit, mean, std)
    val_tensors = _split_to_tensors(val, image_column, label_column, val_limit, mean, std)
    for split_name, tensors in (("train", train_tensors), ("val", val_tensors)):
        if int(tensors.targets.max()) >= classes or int(tensors.targets.min()) < 0:
            raise ValueError(f"{split_name} labels outside [0, {classes}); set data.num_classes")
    spec = DataSpec(task="classification", input_shape=tuple(train_tensors.inputs.shape[1:]), num_classes=classes)
    return Dataset(spec=spec, train=train_tensors, val=val_tensors, name="cifar10")
