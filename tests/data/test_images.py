"""The image pipeline on tiny image folders and parquet files the tests write: augmented batches are the same for
any number of workers and ranks and on resume; evaluation is unaugmented; Mixup/CutMix; refusals."""
from __future__ import annotations

import io

import datasets
import numpy as np
import pytest
import torch

from tests.conftest import compose_config
from research_optim.build import build_data
from research_optim.data.base import rank_slice
from research_optim.data.images import BatchMix, load_hf_images, load_image_folder
from research_optim.errors import InputError
from tests.tiny_files import image_folder

CLASSES = {"ant": 6, "bee": 5, "cat": 5}
STRONG = {"scale": [0.5, 1.0], "hflip": 0.5, "auto_augment": "rand-m9-mstd0.5-inc1", "re_prob": 0.25,
          "interpolation": "bicubic"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    image_folder(root / "train", CLASSES, seed=0)
    image_folder(root / "val", {"ant": 2, "bee": 2, "cat": 2}, seed=1)
    return root


def take(split, steps: int, **kwargs) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [b for _, b in zip(range(steps), split.train_batches(**kwargs))]


def test_batches_do_not_depend_on_workers_ranks_or_resumption(folder):
    kwargs = dict(image_size=8, augment=STRONG, mix={"mixup_alpha": 0.8, "cutmix_alpha": 1.0}, crop_pct=1.0)
    alone = load_image_folder(str(folder), num_workers=0, **kwargs).train
    workers = load_image_folder(str(folder), num_workers=2, **kwargs).train
    reference = take(alone, 5, batch_size=8, seed=4)
    for (x, y), (wx, wy) in zip(reference, take(workers, 5, batch_size=8, seed=4)):
        assert torch.equal(x, wx) and torch.equal(y, wy)
    for (x, y), (rx, ry) in zip(reference[3:], take(alone, 2, batch_size=8, seed=4, start_step=3)):
        assert torch.equal(x, rx) and torch.equal(y, ry)
    for rank in range(2):
        for step, (x, y) in enumerate(take(workers, 5, batch_size=8, seed=4, rank=rank, world_size=2)):
            part = rank_slice(8, rank, 2)
            assert torch.equal(x, reference[step][0][part]) and torch.equal(y, reference[step][1][part])
    assert reference[0][0].shape == (8, 3, 8, 8) and reference[0][1].shape == (8, 3)
    torch.testing.assert_close(reference[0][1].sum(1), torch.ones(8))


def test_augmentation_varies_by_step_and_leaves_the_run_random_stream_alone(folder):
    data = load_image_folder(str(folder), image_size=8, augment=STRONG, num_workers=0)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    batches = take(data.train, 3, batch_size=16, seed=0)  # 16 = every image once per step (one epoch = 1 step)
    assert torch.equal(torch.get_rng_state(), before)
    images = [x[torch.argsort(torch.randperm(16, generator=torch.Generator().manual_seed(s)))] for s, (x, _) in
              zip(range(3), batches)]
    assert not torch.equal(images[0], images[1]) and not torch.equal(images[1], images[2])


def test_evaluation_is_unaugmented_in_order_and_split_over_ranks(folder):
    data = load_image_folder(str(folder), image_size=8, augment=STRONG, num_workers=2, crop_pct=1.0)
    plain = load_image_folder(str(folder), image_size=8, augment=None, num_workers=0, crop_pct=1.0)
    x, y = next(data.val.eval_batches(6))
    px, py = next(plain.val.eval_batches(6))
    assert torch.equal(x, px) and y.tolist() == [0, 0, 1, 1, 2, 2]
    ranks = [torch.cat([b for b, _ in data.val.eval_batches(2, rank=r, world_size=2)]) for r in range(2)]
    assert torch.equal(torch.stack([ranks[0], ranks[1]], 1).flatten(0, 1), x)
    assert data.spec.input_shape == (3, 8, 8) and data.spec.num_classes == 3 and len(data.train) == 16


def test_mixup_and_cutmix_mix_pairs_with_one_lambda_per_step():
    x = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 8, 8).contiguous()
    y = torch.tensor([0, 1, 2, 3])
    mixed, targets = BatchMix(4, mixup_alpha=1.0, cutmix_alpha=0.0, label_smoothing=0.0)(x, y, seed=0, step=0)
    lam = targets[0, 0].item()
    assert 0 < lam < 1
    torch.testing.assert_close(mixed[0], lam * x[0] + (1 - lam) * x[1])
    torch.testing.assert_close(targets[1], torch.tensor([1 - lam, lam, 0, 0]))
    torch.testing.assert_close(targets[2], torch.tensor([0, 0, lam, 1 - lam]))
    cut, cut_targets = BatchMix(4, mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.1)(x, y, seed=0, step=1)
    share_from_partner = (cut[0] == 1).float().mean().item()  # example 0 pasted from example 1
    torch.testing.assert_close(cut_targets.sum(1), torch.ones(4))
    torch.testing.assert_close(cut_targets[0, 1].item(), share_from_partner * 0.9 + 0.025, atol=1e-6, rtol=0)
    again = BatchMix(4, mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.1)(x, y, seed=0, step=1)
    assert torch.equal(again[0], cut) and torch.equal(again[1], cut_targets)
    with pytest.raises(ValueError, match="odd"):
        BatchMix(4)(x[:3], y[:3], seed=0, step=0)


def test_hf_images_from_a_parquet_file_of_png_bytes(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)

    def png(array):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        return buffer.getvalue()

    arrays = rng.integers(0, 255, size=(12, 10, 10, 3), dtype=np.uint8)
    datasets.Dataset.from_dict({"img": [png(a) for a in arrays], "label": [i % 3 for i in range(12)]}).to_parquet(
        str(tmp_path / "images.parquet"))
    data = load_hf_images(str(tmp_path / "images.parquet"), num_classes=3, val_fraction=0.25, image_size=10,
                          augment={"scale": [0.5, 1.0], "hflip": 0.5}, num_workers=0,
                          cache_dir=str(tmp_path / "cache"))
    assert (len(data.train), len(data.val), data.spec.num_classes) == (9, 3, 3)
    x, y = next(data.val.eval_batches(3))
    assert x.shape == (3, 3, 10, 10) and y.dtype == torch.long
    assert next(data.train.train_batches(3, seed=0))[0].shape == (3, 3, 10, 10)


def test_folders_without_classes_or_with_other_classes_are_refused(tmp_path, folder):
    (tmp_path / "flat" / "train").mkdir(parents=True)
    (tmp_path / "flat" / "val").mkdir()
    with pytest.raises(InputError, match="train holds no images in class folders"):
        load_image_folder(str(tmp_path / "flat"))
    image_folder(tmp_path / "other" / "train", {"ant": 1, "bee": 1})
    image_folder(tmp_path / "other" / "val", {"ant": 1, "dog": 1})
    with pytest.raises(InputError, match="val has classes .*'dog'.* but train has"):
        load_image_folder(str(tmp_path / "other"))
    with pytest.raises(InputError, match="is not a folder"):
        load_image_folder(str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="data.augment=.*is not a valid timm create_transform setting"):
        load_image_folder(str(folder), augment={"zoom": 2})
    with pytest.raises(InputError, match="data.mix=.*keys: mixup_alpha"):
        load_image_folder(str(folder), mix={"alpha": 2})


@pytest.mark.slow
def test_trains_a_vit_on_an_image_folder_with_workers_and_mixup(tmp_path, tiny_run, folder):
    summary = tiny_run("data=image_folder", f"data.path={folder}", "data.image_size=8", "data.num_workers=2",
                       "model=vit_t", "train.batch_size=8", "train.steps=20")
    assert summary["status"] == "completed" and np.isfinite(summary["val_loss"])
    assert build_data(compose_config(["data=image_folder", f"data.path={folder}"]).data).spec.num_classes == 3


def test_hf_images_hold_validation_out_of_train_and_report_the_test_split_apart(tmp_path):
    arrays = np.random.default_rng(0).integers(0, 255, size=(16, 8, 8, 3), dtype=np.uint8)
    splits = {name: datasets.Dataset.from_dict({"img": list(arrays[lo:hi]), "label": [i % 2 for i in range(lo, hi)]})
              for name, lo, hi in (("train", 0, 12), ("test", 12, 16))}
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "cifar"))
    data = load_hf_images(str(tmp_path / "cifar"), num_classes=2, val_fraction=0.25, image_size=8, num_workers=0)
    assert (len(data.train), len(data.val), len(data.test)) == (9, 3, 4)
    x, y = next(data.test.eval_batches(4))
    assert x.shape == (4, 3, 8, 8) and y.tolist() == [0, 1, 0, 1]
    with pytest.raises(ValueError, match="data.val_split='test' is the test split"):
        load_hf_images(str(tmp_path / "cifar"), val_split="test", num_classes=2, image_size=8, num_workers=0)
