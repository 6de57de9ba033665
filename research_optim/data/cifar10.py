"""CIFAR-10 (Krizhevsky 2009) through Hugging Face ``datasets``: 50 000 train / 10 000 test 32×32 RGB images.

The hub copy 'uoft-cs/cifar10' has columns ``img`` (PIL image) and ``label`` (ClassLabel, 10 names) and splits
train/test. ``path`` may instead point at a local copy (a ``save_to_disk`` folder, a folder of parquet files, or
one parquet file) — for clusters without internet — in any of the common layouts (docs/data.md):

* the image column (``img`` or ``image``; ``data.image_column`` to name another) holds a ``datasets.Image()``
  feature, encoded PNG/JPEG bytes (as pandas writes them), a struct ``{bytes, path}`` (an Image feature read back
  without its metadata), or an H×W×3 uint8 array;
* the label column (``label``, ``labels``, ``fine_label`` or ``coarse_label``; ``data.label_column``) holds integer
  class ids (a ``ClassLabel`` or plain integers).
"""
from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from torch import Tensor

from research_optim.data.base import DataSpec, Dataset, TensorDataset
from research_optim.data.hf_source import check_labels, class_count, find_column, open_source, train_val_test

# Per-channel statistics of the CIFAR-10 training images (pixel values in [0, 1]).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


IMAGE_COLUMNS = ("img", "image")
LABEL_COLUMNS = ("label", "labels", "fine_label", "coarse_label")


def to_image(value: Any):
    """One stored image as a PIL image, whatever the layout: PIL, encoded bytes, {bytes, path}, or an HWC array."""
    from PIL import Image

    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
        if isinstance(value, str):
            return Image.open(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return Image.open(io.BytesIO(value))
    array = np.asarray(value, dtype=np.uint8)
    if array.ndim == 3:
        return Image.fromarray(array)
    raise ValueError(f"cannot read an image from a {type(value).__name__} value (see docs/data.md for the layouts)")


def images_to_tensor(images: list, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """Stored images → (N, 3, H, W) float32, scaled to [0, 1] then normalised per channel."""
    arrays = np.stack([np.asarray(to_image(image).convert("RGB"), dtype=np.uint8) for image in images])
    x = torch.from_numpy(arrays).permute(0, 3, 1, 2).float().div_(255.0)
    return (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


def _split_to_tensors(split, image_column: str, label_column: str, limit: int | None, mean, std) -> TensorDataset:
    missing = {image_column, label_column} - set(split.column_names)
    if missing:
        raise ValueError(f"data columns {sorted(missing)} not found in a split with columns {split.column_names}; "
                         "set data.image_column / data.label_column")
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
    val_split: str | None = None,
    test_split: str | None = "test",
    val_fraction: float = 0.1,
    split_seed: int = 0,
    limit: int | None = None,
    val_limit: int | None = None,
    test_limit: int | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    num_classes: int = 10,
    cache_dir: str | None = None,
) -> Dataset:
    """Normalised (3, 32, 32) images and int64 labels.

    Validation is ``val_split`` when set and the source has it; otherwise (the default) a seeded ``val_fraction``
    of the train split, held out from training. ``test_split``, when the source has it, is evaluated at the end of
    a run and reported apart; it can never be the validation split. ``limit`` / ``val_limit`` / ``test_limit`` keep the first
    examples only (quick runs). ``image_column`` / ``label_column``: None finds them among ``IMAGE_COLUMNS`` /
    ``LABEL_COLUMNS``.
    """
    train, val, test = train_val_test(open_source(path, config_name, cache_dir=cache_dir), train_split, val_split,
                                      test_split, val_fraction, split_seed)
    image_column = find_column(train.column_names, image_column, IMAGE_COLUMNS, "image_column")
    label_column = find_column(train.column_names, label_column, LABEL_COLUMNS, "label_column")
    classes = class_count(train, label_column, num_classes)
    mean, std = CIFAR10_MEAN, CIFAR10_STD
    tensors = {name: _split_to_tensors(split, image_column, label_column, split_limit, mean, std)
               for name, split, split_limit in (("train", train, limit), ("val", val, val_limit),
                                                ("test", test, test_limit))
               if split is not None}
    for split_name, split_tensors in tensors.items():
        check_labels(split_tensors.targets, classes, split_name)
    spec = DataSpec(task="classification", input_shape=tuple(tensors["train"].inputs.shape[1:]), num_classes=classes)
    return Dataset(spec=spec, train=tensors["train"], val=tensors["val"], test=tensors.get("test"), name="cifar10")
