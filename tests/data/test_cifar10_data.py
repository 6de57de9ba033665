"""CIFAR-10 loading from local copies: the hub's layout (img: Image(), label: ClassLabel) and the other common
parquet layouts — PNG/JPEG bytes written by pandas, {bytes, path} structs, HWC arrays, label/labels/fine_label."""
from __future__ import annotations

import io

import datasets
import numpy as np
import pytest
import torch

from research_optim.data.cifar10 import CIFAR10_MEAN, CIFAR10_STD, load_cifar10

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


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
    """Validation is held out from the training images; the test split is its own and never validation."""
    train, train_pixels = _split(40, seed=0)
    test, test_pixels = _split(8, seed=1)
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "cifar"))
    data = load_cifar10(path=str(tmp_path / "cifar"), val_fraction=0.25)
    assert data.spec.task == "classification" and data.spec.input_shape == (3, 32, 32) and data.spec.num_classes == 10
    assert len(data.train) == 30 and len(data.val) == 10 and data.train.inputs.dtype == torch.float32
    torch.testing.assert_close(data.test.inputs, _expected(test_pixels))
    assert data.test.targets.tolist() == [i % 10 for i in range(8)] and data.val.targets.dtype == torch.long
    # train and validation partition the training images
    every = torch.cat([data.train.inputs, data.val.inputs]).flatten(1)
    assert sorted(torch.cdist(every, _expected(train_pixels).flatten(1)).argmin(1).tolist()) == list(range(40))
    limited = load_cifar10(path=str(tmp_path / "cifar"), val_fraction=0.25, limit=20, test_limit=5)
    assert len(limited.train) == 20 and len(limited.test) == 5
    with pytest.raises(ValueError, match="data.val_split='test' is the test split: validation must be held out"):
        load_cifar10(path=str(tmp_path / "cifar"), val_split="test")


def test_a_source_without_a_test_split_has_none(tmp_path):
    train, _ = _split(20, seed=5)
    datasets.DatasetDict({"train": train, "validation": train}).save_to_disk(str(tmp_path / "cifar"))
    data = load_cifar10(path=str(tmp_path / "cifar"), val_split="validation")
    assert data.test is None and len(data.val) == 20


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
    datasets.DatasetDict({"train": train.rename_column("img", "picture"), "test": train}).save_to_disk(
        str(tmp_path / "d"))
    with pytest.raises(ValueError, match=r"no column named img or image .*set data.image_column"):
        load_cifar10(path=str(tmp_path / "d"))
    with pytest.raises(ValueError, match=r"data.image_column='photo' is not a column"):
        load_cifar10(path=str(tmp_path / "d"), image_column="photo")


def _encoded(pixels: np.ndarray, fmt: str) -> list[bytes]:
    from PIL import Image

    out = []
    for p in pixels:
        buffer = io.BytesIO()
        Image.fromarray(p).save(buffer, format=fmt, **({"quality": 100, "subsampling": 0} if fmt == "JPEG" else {}))
        out.append(buffer.getvalue())
    return out


@pytest.mark.parametrize("layout, label", [("png_bytes", "label"), ("jpeg_bytes", "labels"),
                                           ("bytes_path_struct", "fine_label"), ("path_struct", "label"),
                                           ("hwc_array", "label")])
def test_common_parquet_layouts_written_by_pandas(tmp_path, layout, label):
    from PIL import Image

    pandas = pytest.importorskip("pandas")
    pixels = np.random.default_rng(4).integers(0, 256, size=(12, 32, 32, 3), dtype=np.uint8)
    encoded = _encoded(pixels, "JPEG" if layout == "jpeg_bytes" else "PNG")
    if layout == "jpeg_bytes":  # lossy: the reference is what the JPEG decodes to
        pixels = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in encoded])
    if layout in ("png_bytes", "jpeg_bytes"):
        images = encoded
    elif layout == "bytes_path_struct":
        images = [{"bytes": b, "path": f"{i}.png"} for i, b in enumerate(encoded)]
    elif layout == "path_struct":
        paths = [tmp_path / f"{i}.png" for i in range(len(pixels))]
        for path, data in zip(paths, encoded):
            path.write_bytes(data)
        images = [{"bytes": None, "path": str(path)} for path in paths]
    else:
        images = [p.tolist() for p in pixels]
    labels = [i % 10 for i in range(len(pixels))]
    pandas.DataFrame({"image": images, label: labels}).to_parquet(tmp_path / "cifar.parquet")
    data = load_cifar10(path=str(tmp_path / "cifar.parquet"), val_fraction=0.25, cache_dir=str(tmp_path / "cache"))
    every = torch.cat([data.train.inputs, data.val.inputs])
    expected = _expected(pixels)
    order = torch.cdist(every.flatten(1), expected.flatten(1)).argmin(1)
    assert sorted(order.tolist()) == list(range(len(pixels)))
    torch.testing.assert_close(every, expected[order])
    assert torch.cat([data.train.targets, data.val.targets]).tolist() == [labels[i] for i in order.tolist()]
