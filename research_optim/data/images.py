"""Images read and augmented per step by DataLoader workers: image folders and ``datasets`` sources.

Two sources: a torchvision ``ImageFolder`` tree (``<path>/<train_dir>/<class>/<image>`` and the same under
``<val_dir>``) and any ``datasets`` source with an image and a label column (``data/hf_source.py``). Images stay
on disk and are decoded and augmented by ``data.num_workers`` DataLoader workers.

Augmentation is timm's ``create_transform`` (``data.augment``: its training options — random-resized crop
``scale``/``ratio``, ``hflip``/``vflip``, ``color_jitter``, ``auto_augment`` such as RandAugment
'rand-m9-mstd0.5-inc1', random erasing ``re_prob`` ...; null: none), and evaluation has its own transform
(resize + centre crop, ``crop_pct``). Mixup/CutMix (``data.mix``) mix pairs of images of each batch.

Deterministic and resumable: the global batch of a step is :func:`~research_optim.data.base.epoch_batches`; each
example is augmented under its own seed, drawn from (seed, step, its position in the global batch), whatever
worker or rank decodes it; Mixup/CutMix draw from (seed, step) and pair positions (2k, 2k+1), which never
straddle two ranks. So any number of workers and ranks give the batches one process would, and a resumed run
continues with the same ones.
"""
from __future__ import annotations

import math
import random
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from research_optim.data.base import DataSpec, Dataset, epoch_batches, rank_slice
from research_optim.data.cifar10 import IMAGE_COLUMNS, LABEL_COLUMNS, to_image
from research_optim.data.hf_source import check_labels, class_count, find_column, open_source, train_val_test
from research_optim.errors import InputError


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed the generators image transforms draw from (Python's, NumPy's, torch's CPU one); restore them after,
    so augmenting in the training process leaves the run's own random stream untouched."""
    states = random.getstate(), np.random.get_state(), torch.default_generator.get_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.default_generator.set_state(states[2])


def example_seed(seed: int, step: int, position: int) -> int:
    """The augmentation seed of the example at ``position`` of the global batch of ``step``."""
    return int(np.random.SeedSequence([seed, step, position]).generate_state(1)[0])


class FolderReader:
    """Example i of an ImageFolder: (PIL image, class index)."""

    def __init__(self, folder: Any) -> None:
        self.folder = folder

    def __call__(self, index: int) -> tuple[Any, int]:
        path, label = self.folder.samples[index]
        return self.folder.loader(path), label


class ColumnReader:
    """Example i of a ``datasets`` split: (PIL image from any stored layout, label)."""

    def __init__(self, split: Any, image_column: str, label_column: str) -> None:
        self.split, self.image_column, self.label_column = split, image_column, label_column

    def __call__(self, index: int) -> tuple[Any, int]:
        row = self.split[index]
        return to_image(row[self.image_column]), int(row[self.label_column])


class Transformed(torch.utils.data.Dataset):
    """Items ``(index, seed)`` → (transformed image, label), the transform run under ``seed``."""

    def __init__(self, read: Callable[[int], tuple[Any, int]], transform: Callable) -> None:
        self.read, self.transform = read, transform

    def __getitem__(self, item: tuple[int, int]) -> tuple[Tensor, int]:
        index, seed = item
        image, label = self.read(index)
        with seeded(seed):
            return self.transform(image.convert("RGB")), label


class BatchMix:
    """Mixup (Zhang et al. 2018) or CutMix (Yun et al. 2019) of each batch, with label smoothing: soft targets.

    Example 2k is mixed with 2k+1 and 2k+1 with 2k, with one λ ~ Beta(α, α) (and one CutMix box) per step, drawn
    from (seed, step). With probability ``prob`` a step is mixed; ``switch_prob`` chooses CutMix when both alphas
    are set. timm's Mixup options, drawn per step instead of from the global NumPy state.
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0, prob: float = 1.0,
                 switch_prob: float = 0.5, label_smoothing: float = 0.1) -> None:
        if mixup_alpha < 0 or cutmix_alpha < 0 or not 0 <= prob <= 1 or not 0 <= switch_prob <= 1:
            raise InputError("data.mix: mixup_alpha and cutmix_alpha must be ≥ 0, prob and switch_prob in [0, 1]")
        if not 0 <= label_smoothing < 1:
            raise InputError(f"data.mix.label_smoothing must be in [0, 1), got {label_smoothing}")
        self.num_classes, self.mixup_alpha, self.cutmix_alpha = num_classes, mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob, self.label_smoothing = prob, switch_prob, label_smoothing

    def __call__(self, x: Tensor, y: Tensor, seed: int, step: int) -> tuple[Tensor, Tensor]:
        if len(x) % 2:
            raise ValueError(f"data.mix pairs the examples of each process's batch; it has {len(x)} (odd)")
        off = self.label_smoothing / self.num_classes
        targets = torch.full((len(y), self.num_classes), off).scatter_(1, y[:, None], 1 - self.label_smoothing + off)
        rng = np.random.default_rng([seed, step, 1])
        mix, cutmix = rng.random() < self.prob, rng.random() < self.switch_prob
        cutmix = self.cutmix_alpha > 0 and (cutmix or self.mixup_alpha == 0)
        alpha = self.cutmix_alpha if cutmix else self.mixup_alpha
        if not mix or alpha == 0:
            return x, targets
        lam = float(rng.beta(alpha, alpha))
        partner = torch.arange(len(x)) ^ 1
        if cutmix:
            height, width = x.shape[-2:]
            cut = math.sqrt(1 - lam)
            cy, cx = int(rng.integers(height)), int(rng.integers(width))
            top, bottom = max(cy - int(height * cut) // 2, 0), min(cy + int(height * cut) // 2, height)
            left, right = max(cx - int(width * cut) // 2, 0), min(cx + int(width * cut) // 2, width)
            x = x.clone()
            x[..., top:bottom, left:right] = x[partner][..., top:bottom, left:right]
            lam = 1 - (bottom - top) * (right - left) / (height * width)
        else:
            x = lam * x + (1 - lam) * x[partner]
        return x, lam * targets + (1 - lam) * targets[partner]


class ImageSplit:
    """One split: ``len()`` examples read by ``read(i) → (PIL image, label)``, batched by DataLoader workers."""

    def __init__(self, read: Callable[[int], tuple[Any, int]], size: int, train_transform: Callable,
                 eval_transform: Callable, num_workers: int, mix: BatchMix | None) -> None:
        self.size, self.num_workers, self.mix = size, num_workers, mix
        self.train_items, self.eval_items = Transformed(read, train_transform), Transformed(read, eval_transform)

    def __len__(self) -> int:
        return self.size

    def _loader(self, items: Transformed, batches: Any) -> DataLoader:
        # Its own generator: the workers' base seed (unused: every example has its seed) is not drawn from the
        # run's random stream, which a resumed run must continue bit for bit.
        return DataLoader(items, batch_sampler=batches, num_workers=self.num_workers, generator=torch.Generator())

    def train_batches(
        self, batch_size: int, seed: int, start_step: int = 0, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Endless augmented batches from ``start_step`` on: this rank's part of each global batch."""
        part = rank_slice(batch_size, rank, world_size)
        positions = range(batch_size)[part]

        def items() -> Iterator[list[tuple[int, int]]]:
            for step, idx in enumerate(epoch_batches(self.size, batch_size, seed, start_step), start=start_step):
                yield [(int(idx[p]), example_seed(seed, step, p)) for p in positions]

        for step, (x, y) in enumerate(self._loader(self.train_items, items()), start=start_step):
            yield self.mix(x, y, seed, step) if self.mix is not None else (x, y)

    def eval_batches(self, batch_size: int, rank: int = 0, world_size: int = 1,
                     limit: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """The first ``limit`` examples (None: all) once with the evaluation transform, example i on rank
        i mod world_size."""
        mine = list(range(min(self.size, limit if limit is not None else self.size)))[rank::world_size]
        batches = [[(i, 0) for i in mine[lo : lo + batch_size]] for lo in range(0, len(mine), batch_size)]
        yield from self._loader(self.eval_items, batches)


def _transforms(image_size: int, augment: dict | None, crop_pct: float, mean, std) -> tuple[Callable, Callable]:
    from timm.data import create_transform

    evaluation = create_transform(image_size, is_training=False, crop_pct=crop_pct, mean=mean, std=std)
    if augment is None:
        return evaluation, evaluation
    try:
        return create_transform(image_size, is_training=True, mean=mean, std=std, **augment), evaluation
    except (TypeError, ValueError, AssertionError) as error:
        raise InputError(f"data.augment={augment} is not a valid timm create_transform setting ({error})") from None


def _image_data(name: str, train: tuple, val: tuple, classes: int, image_size: int, augment: dict | None,
                mix: dict | None, crop_pct: float, mean, std, num_workers: int, test: tuple | None = None) -> Dataset:
    if image_size < 1 or num_workers < 0:
        raise InputError(f"data.image_size must be ≥ 1 and data.num_workers ≥ 0, got {image_size} and {num_workers}")
    train_transform, eval_transform = _transforms(image_size, augment, crop_pct, tuple(mean), tuple(std))
    try:
        mixer = BatchMix(classes, **mix) if mix is not None else None
    except TypeError as error:
        raise InputError(f"data.mix={mix}: {error} (keys: mixup_alpha, cutmix_alpha, prob, switch_prob, "
                         "label_smoothing)") from None
    train_split, val_split, test_split = (
        None if split is None else ImageSplit(*split, train_transform, eval_transform, num_workers, mixer)
        for split in (train, val, test))
    spec = DataSpec(task="classification", input_shape=(3, image_size, image_size), num_classes=classes)
    return Dataset(spec=spec, train=train_split, val=val_split, test=test_split, name=name)


def _folder(root: Path, key: str):
    from torchvision.datasets import ImageFolder

    if not root.is_dir():
        raise InputError(f"{key}: {root} is not a folder (the layout is <split>/<class>/<image>)")
    try:
        return ImageFolder(str(root))
    except FileNotFoundError as error:  # no class folders, or class folders without images
        raise InputError(f"{key}: {root} holds no images in class folders ({error}); the layout is "
                         "<split>/<class name>/<image>") from None


def load_image_folder(path: str, train_dir: str = "train", val_dir: str = "val", image_size: int = 224,
                      augment: dict | None = None, mix: dict | None = None, crop_pct: float = 0.875,
                      mean: tuple = (0.485, 0.456, 0.406), std: tuple = (0.229, 0.224, 0.225),
                      num_workers: int = 4) -> Dataset:
    """An ImageFolder tree: classes are the sub-folders of ``train_dir`` (sorted), the same under ``val_dir``."""
    root = Path(path).expanduser()
    train, val = _folder(root / train_dir, "data.path/data.train_dir"), _folder(root / val_dir, "data.path/data.val_dir")
    if train.classes != val.classes:
        raise InputError(f"data.path={path}: {val_dir} has classes {val.classes[:5]}... but {train_dir} has "
                         f"{train.classes[:5]}...; both need the same class folders")
    return _image_data(root.name, (FolderReader(train), len(train)), (FolderReader(val), len(val)), len(train.classes),
                       image_size, augment, mix, crop_pct, mean, std, num_workers)


def load_hf_images(path: str = "uoft-cs/cifar10", config_name: str | None = None, train_split: str = "train",
                   val_split: str | None = None, test_split: str | None = "test", val_fraction: float = 0.1,
                   split_seed: int = 0, image_column: str | None = None, label_column: str | None = None,
                   num_classes: int | None = None, image_size: int = 32, augment: dict | None = None,
                   mix: dict | None = None, crop_pct: float = 1.0, mean: tuple = (0.4914, 0.4822, 0.4465),
                   std: tuple = (0.2470, 0.2435, 0.2616), num_workers: int = 4, cache_dir: str | None = None) -> Dataset:
    """A ``datasets`` source with an image column (any layout of docs/data.md) and integer labels. Validation is
    ``val_split`` when set and present, else ``val_fraction`` of the train split held out; ``test_split``, when
    present, is evaluated at the end of a run and reported apart — it can never be the validation split."""
    train, val, test = train_val_test(open_source(path, config_name, cache_dir=cache_dir), train_split, val_split,
                                      test_split, val_fraction, split_seed)
    image_column = find_column(train.column_names, image_column, IMAGE_COLUMNS, "image_column")
    label_column = find_column(train.column_names, label_column, LABEL_COLUMNS, "label_column")
    classes = class_count(train, label_column, num_classes)
    named = {"train": train, "val": val, "test": test}
    for split_name, split in named.items():
        if split is not None:
            check_labels(np.asarray(split[label_column]), classes, split_name)
    label = path.rstrip("/").split("/")[-1] + (f"/{config_name}" if config_name else "")
    train_reader, val_reader, test_reader = (
        None if split is None else (ColumnReader(split, image_column, label_column), len(split))
        for split in named.values())
    return _image_data(label, train_reader, val_reader, classes, image_size, augment, mix, crop_pct, mean, std,
                       num_workers, test_reader)
