"""Open a Hugging Face ``datasets`` source — a hub id, a local folder, a data file, or a ``save_to_disk`` folder.

One function so every data set resolves ``data.path`` the same way and fails before training with an error
that names the config key, instead of a hub lookup for a mistyped local path.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from research_optim.errors import InputError

# File extension → the `datasets` packaged builder that reads it.
FILE_BUILDERS = {
    ".parquet": "parquet",
    ".json": "json",
    ".jsonl": "json",
    ".txt": "text",
    ".csv": "csv",
    ".arrow": "arrow",
}
PACKAGED_BUILDERS = set(FILE_BUILDERS.values())


def _looks_local(path: str) -> bool:
    """A hub id is 'name' or 'owner/name'; anything else path-like is meant to be on disk."""
    return (
        path.startswith(("/", ".", "~"))
        or path.count("/") > 1
        or os.sep != "/" and os.sep in path
        or Path(path).suffix.lower() in FILE_BUILDERS
    )


def _plain_data_files(data_files: Any) -> Any:
    """str, list of str or {split: files} as plain Python (Hydra hands over DictConfig/ListConfig)."""
    if data_files is None or isinstance(data_files, str):
        return data_files
    if hasattr(data_files, "items"):
        return {str(k): _plain_data_files(v) for k, v in data_files.items()}
    return [str(f) for f in data_files]


def _check_files_exist(data_files: Any) -> None:
    files = data_files.values() if isinstance(data_files, dict) else [data_files]
    for entry in files:
        for file in [entry] if isinstance(entry, str) else entry:
            if "://" not in file and not any(ch in file for ch in "*?[") and not Path(file).expanduser().exists():
                raise FileNotFoundError(f"data.data_files: {file!r} does not exist")


def open_source(
    path: str,
    name: str | None = None,
    data_files: Any = None,
    streaming: bool = False,
    cache_dir: str | None = None,
) -> Any:
    """All splits of a source as a ``DatasetDict`` (or ``IterableDatasetDict`` when ``streaming``).

    ``path`` may be: a ``save_to_disk`` folder (read with ``load_from_disk``), a folder of data files, a single
    .parquet/.json/.jsonl/.txt/.csv file, a packaged builder name ('json', 'parquet', ...) with ``data_files``,
    or a hub id such as 'uoft-cs/cifar10'.
    """
    import datasets

    data_files = _plain_data_files(data_files)
    if path in PACKAGED_BUILDERS:
        if data_files is None:
            raise ValueError(f"data.path={path!r} is a file format; it needs data.data_files")
        _check_files_exist(data_files)
        return datasets.load_dataset(path, data_files=data_files, streaming=streaming, cache_dir=cache_dir)

    local = Path(path).expanduser()
    if local.exists():
        if local.is_dir() and ((local / "dataset_dict.json").exists() or (local / "state.json").exists()):
            loaded = datasets.load_from_disk(str(local))
            if isinstance(loaded, datasets.Dataset):
                loaded = datasets.DatasetDict({"train": loaded})
            if streaming:
                loaded = datasets.IterableDatasetDict({k: v.to_iterable_dataset() for k, v in loaded.items()})
            return loaded
        if local.is_file():
            builder = FILE_BUILDERS.get(local.suffix.lower())
            if builder is None:
                raise ValueError(f"data.path={path!r}: unknown file type; use one of {sorted(FILE_BUILDERS)}")
            return datasets.load_dataset(builder, data_files=str(local), streaming=streaming, cache_dir=cache_dir)
        return datasets.load_dataset(str(local), name, data_files=data_files, streaming=streaming, cache_dir=cache_dir)

    if _looks_local(path):
        raise FileNotFoundError(f"data.path={path!r} does not exist (and is not a Hugging Face hub id)")
    try:
        return datasets.load_dataset(path, name, data_files=data_files, streaming=streaming, cache_dir=cache_dir)
    except Exception as error:  # the hub's own errors rarely say which config key was wrong
        raise RuntimeError(
            f"could not load data.path={path!r} (name={name!r}) from the Hugging Face hub or its cache: {error}"
        ) from error


def train_and_val(splits: Any, train_split: str, val_split: str | None, val_fraction: float,
                  split_seed: int) -> tuple[Any, Any]:
    """(train, validation) of a map-style source: ``val_split`` when the source has it, otherwise a seeded
    ``val_fraction`` of the train split, held out."""
    if train_split not in splits:
        raise ValueError(f"data.train_split={train_split!r} not in the source's splits {list(splits)}")
    train = splits[train_split]
    if val_split is not None and val_split in splits:
        return train, splits[val_split]
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
    held_out = train.train_test_split(test_size=val_fraction, seed=split_seed)
    return held_out["train"], held_out["test"]


def train_val_test(splits: Any, train_split: str, val_split: str | None, test_split: str | None, val_fraction: float,
                   split_seed: int) -> tuple[Any, Any, Any]:
    """(train, validation, test) of a map-style source: validation as :func:`train_and_val` holds it out, never the
    test split; test is ``test_split`` when the source has it, else None."""
    if val_split is not None and val_split == test_split:
        raise InputError(f"data.val_split={val_split!r} is the test split: validation must be held out from the "
                         "training data (data.val_split=null holds out data.val_fraction of it)")
    train, val = train_and_val(splits, train_split, val_split, val_fraction, split_seed)
    return train, val, splits[test_split] if test_split is not None and test_split in splits else None


def find_column(columns: list[str], chosen: str | None, candidates: tuple[str, ...], key: str) -> str:
    """``chosen`` if it is a column, else the first of ``candidates`` that is; the error names ``data.<key>``."""
    if chosen is not None:
        if chosen not in columns:
            raise ValueError(f"data.{key}={chosen!r} is not a column of the data {columns}")
        return chosen
    found = next((name for name in candidates if name in columns), None)
    if found is None:
        raise ValueError(f"the data has no column named {' or '.join(candidates)} (it has {columns}): set data.{key}")
    return found


def class_count(split: Any, label_column: str, num_classes: int | None) -> int:
    """The number of classes: the label column's ``ClassLabel`` count, else ``data.num_classes``."""
    classes = getattr(split.features.get(label_column), "num_classes", None) or num_classes
    if classes is None:
        raise ValueError(f"the label column {label_column!r} is not a ClassLabel: set data.num_classes")
    return classes


def check_labels(labels: Any, classes: int, split_name: str) -> None:
    """Refuse labels outside [0, classes) (e.g. GLUE's unlabelled test split, -1)."""
    if len(labels) and (int(labels.max()) >= classes or int(labels.min()) < 0):
        raise ValueError(f"{split_name} labels outside [0, {classes}) (from {int(labels.min())} to "
                         f"{int(labels.max())}): set data.num_classes, or choose a labelled split")
