"""Sequence classification of texts or text pairs (GLUE-style: SST-2, CoLA; MRPC, RTE, QQP, MNLI) from any
``datasets`` source (a hub id such as 'nyu-mll/glue' with its task as ``config_name``, or local files).

Each example is tokenised with ``data.tokenizer`` as ``text₁ [eos] text₂ [eos]`` (one text: ``text₁ [eos]``),
cut to ``seq_len`` tokens by shortening the longer text first, and right-padded with ``PAD_ID``; the label is an
integer class. Text models read the class at the last real token (``models/transformer.py``), so a language model
pretrained with the same tokenizer fine-tunes on it through ``model.pretrained``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from research_optim.data.base import PAD_ID, DataSpec, Dataset, TensorDataset
from research_optim.data.hf_source import check_labels, class_count, open_source, train_and_val
from research_optim.data.tokenizers import Tokenizer


def fit_lengths(lengths: list[int], budget: int) -> list[int]:
    """Shorten the longest part by one token until the parts fit in ``budget`` (Hugging Face's longest_first)."""
    lengths = list(lengths)
    while sum(lengths) > budget:
        longest = max(range(len(lengths)), key=lambda i: lengths[i])
        lengths[longest] -= 1
    return lengths


def encode_example(texts: list[str], tokenizer: Tokenizer, seq_len: int) -> np.ndarray:
    """``seq_len`` ids: each text's tokens followed by end-of-text, cut longest-first, padded with ``PAD_ID``."""
    parts = [tokenizer.encode_ordinary(text) for text in texts]
    kept = fit_lengths([len(p) for p in parts], seq_len - len(parts))
    ids = np.concatenate([np.append(part[:n], tokenizer.eos_id) for part, n in zip(parts, kept)])
    return np.pad(ids, (0, seq_len - len(ids)), constant_values=PAD_ID)


def _encode_split(split: Any, text_columns: list[str], label_column: str, tokenizer: Tokenizer, seq_len: int,
                  limit: int | None) -> TensorDataset:
    missing = sorted(set(text_columns + [label_column]) - set(split.column_names))
    if missing:
        raise ValueError(f"data columns {missing} not found in a split with columns {split.column_names}; set "
                         "data.text_columns / data.label_column")
    if limit is not None:
        split = split.select(range(min(limit, len(split))))
    rows = [encode_example([row[c] for c in text_columns], tokenizer, seq_len) for row in split]
    inputs = torch.from_numpy(np.stack(rows)) if rows else torch.empty(0, seq_len, dtype=torch.long)
    return TensorDataset(inputs, torch.as_tensor(split[label_column], dtype=torch.long))


def load_text_pairs(
    tokenizer: Tokenizer,
    path: str = "nyu-mll/glue",
    config_name: str | None = "mrpc",
    data_files: Any = None,
    text_columns: tuple[str, ...] = ("sentence1", "sentence2"),
    label_column: str = "label",
    train_split: str = "train",
    val_split: str | None = "validation",
    val_fraction: float = 0.1,
    split_seed: int = 0,
    seq_len: int = 128,
    num_classes: int | None = None,
    limit: int | None = None,
    val_limit: int | None = None,
    cache_dir: str | None = None,
) -> Dataset:
    """Token sequences (N, ``seq_len``) and int64 labels; validation is ``val_split`` or a seeded ``val_fraction``
    of train. ``num_classes`` is needed only when the label column is not a ``ClassLabel``."""
    columns = list(text_columns)
    if not 1 <= len(columns) <= 2:
        raise ValueError(f"data.text_columns must name one or two columns, got {columns}")
    if seq_len < 2 * len(columns):
        raise ValueError(f"data.seq_len={seq_len} leaves no room for {len(columns)} text(s) and their end tokens")
    splits = open_source(path, config_name, data_files=data_files, cache_dir=cache_dir)
    train, val = train_and_val(splits, train_split, val_split, val_fraction, split_seed)
    classes = class_count(train, label_column, num_classes)
    train_set = _encode_split(train, columns, label_column, tokenizer, seq_len, limit)
    val_set = _encode_split(val, columns, label_column, tokenizer, seq_len, val_limit)
    for split_name, tensors in (("train", train_set), ("val", val_set)):
        check_labels(tensors.targets, classes, split_name)
    spec = DataSpec(task="classification", input_shape=(seq_len,), num_classes=classes,
                    vocab_size=tokenizer.vocab_size, extra={"tokenizer": tokenizer.identity()})
    label = path.rstrip("/").split("/")[-1] + (f"/{config_name}" if config_name else "")
    return Dataset(spec=spec, train=train_set, val=val_set, name=label)
