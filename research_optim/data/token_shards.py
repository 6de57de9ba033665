"""Token shards: a corpus tokenised once (``python -m research_optim.prepare``), read by training as memory maps.

A shard set is a folder::

    meta.json            format, tokenizer identity, dtype, the source config, per split: tokens, documents, shards
    train_0000.bin ...   the train documents' tokens, each document followed by end-of-document (raw uint16/uint32)
    val_0000.bin ...     the held-out documents, the same way

Tokens are stored as uint16 when the vocabulary fits (≤ 65 536 ids), else uint32. Training draws windows of
``seq_len + 1`` tokens at uniformly random positions: the global batch of step ``s`` is drawn from the seed and
``s`` alone and every rank keeps its :func:`~research_optim.data.base.rank_slice` of it, so a run resumes at any
step and N ranks train on exactly the windows one process would. Evaluation reads consecutive windows in order.

A shard set records the tokenizer and the source that made it; training refuses shards whose tokenizer
(vocabulary hash, size, end-of-document id) or source differ from the config's, naming both.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor

from research_optim.data.base import DataSpec, Dataset, rank_slice
from research_optim.data.tokenizers import Tokenizer, describe, same_tokenizer
from research_optim.errors import InputError

META = "meta.json"
FORMAT = 1


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


# ----------------------------------------------------------------------------------------------------- reading
class ShardWindows:
    """Windows of ``seq_len + 1`` tokens from a split's memory-mapped shards (a window never straddles two).

    ``max_tokens`` keeps the first tokens only (evaluation on part of a large held-out split). ``len()`` is the
    number of consecutive, non-overlapping windows: one epoch's worth of training windows.
    """

    def __init__(self, directory: Path, shards: list[dict], dtype: np.dtype, seq_len: int,
                 max_tokens: int | None = None) -> None:
        self.files, self.sizes = [], []
        left = max_tokens
        for shard in shards:
            size = shard["tokens"] if left is None else min(shard["tokens"], left)
            if size > seq_len:
                self.files.append(directory / shard["file"])
                self.sizes.append(size)
            if left is not None and (left := left - size) <= 0:
                break
        self.dtype, self.seq_len = dtype, seq_len
        self._maps: list[np.memmap] | None = None  # opened on first use, in the process that reads
        self.windows_per_shard = [(size - 1) // seq_len for size in self.sizes]
        self.starts_per_shard = np.array([size - seq_len for size in self.sizes], dtype=np.int64)

    def __len__(self) -> int:
        return sum(self.windows_per_shard)

    def _window(self, shard: int, start: int) -> np.ndarray:
        if self._maps is None:
            self._maps = [np.memmap(file, dtype=self.dtype, mode="r") for file in self.files]
        return self._maps[shard][start : start + self.seq_len + 1]

    def _stack(self, windows: Iterable[np.ndarray]) -> tuple[Tensor, Tensor]:
        tokens = torch.from_numpy(np.stack(list(windows)).astype(np.int64))
        return tokens[:, :-1], tokens[:, 1:]

    def train_batches(
        self, batch_size: int, seed: int, start_step: int = 0, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Endless (inputs, targets): this rank's part of each global batch of ``batch_size`` random windows."""
        if not self.sizes:
            raise InputError(f"the shards hold no window of data.seq_len+1={self.seq_len + 1} tokens")
        part = rank_slice(batch_size, rank, world_size)
        bounds = np.cumsum(self.starts_per_shard)
        step = start_step
        while True:
            positions = np.random.default_rng([seed, step]).integers(0, bounds[-1], size=batch_size)[part]
            shards = np.searchsorted(bounds, positions, side="right")
            starts = positions - (bounds[shards] - self.starts_per_shard[shards])
            yield self._stack(self._window(int(s), int(o)) for s, o in zip(shards, starts))
            step += 1

    def eval_batches(self, batch_size: int, rank: int = 0, world_size: int = 1,
                     limit: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """The first ``limit`` consecutive windows (None: all) once, window i on rank i mod world_size."""
        order = [(shard, i * self.seq_len) for shard, count in enumerate(self.windows_per_shard) for i in range(count)]
        mine = order[: limit if limit is not None else len(order)][rank::world_size]
        for lo in range(0, len(mine), batch_size):
            yield self._stack(self._window(s, o) for s, o in mine[lo : lo + batch_size])


def read_meta(shards: str) -> dict:
    path = Path(shards).expanduser() / META
    if not path.is_file():
        raise InputError(f"data.shards={shards} holds no prepared shards ({META} missing): tokenise the corpus "
                         "first with python -m research_optim.prepare and the same data config")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT:
        raise InputError(f"data.shards={shards} has shard format {meta.get('format')}, this code reads {FORMAT}: "
                         "prepare them again")
    return meta


def check_prepared(meta: dict, shards: str, tokenizer: Tokenizer, source: dict) -> None:
    """Refuse shards made with another tokenizer or from another source than the config says."""
    if not same_tokenizer(meta["tokenizer"], tokenizer.identity()):
        raise InputError(f"data.shards={shards} was prepared with tokenizer {describe(meta['tokenizer'])}, but "
                         f"data.tokenizer is {describe(tokenizer.identity())}: prepare shards with this tokenizer "
                         "(another data.shards) or choose the shards' tokenizer")
    keys = (set(source) | set(meta["source"])) - set(LAYOUT_KEYS)
    differ = sorted(key for key in keys if source.get(key) != meta["source"].get(key))
    if differ:
        pairs = ", ".join(f"{k}: {meta['source'].get(k)!r} there, {source.get(k)!r} here" for k in differ)
        raise InputError(f"data.shards={shards} was prepared from another data.source ({pairs}): prepare them "
                         "again (another data.shards) or restore the config")


def load_token_shards(shards: str, tokenizer: Tokenizer, source: dict, seq_len: int = 256,
                      val_tokens: int | None = 1_000_000) -> Dataset:
    """The LM data set of a prepared shard set; ``val_tokens``: evaluate on the held-out split's first tokens."""
    if seq_len < 1:
        raise InputError(f"data.seq_len must be ≥ 1, got {seq_len}")
    meta = read_meta(shards)
    check_prepared(meta, shards, tokenizer, source)
    directory, dtype = Path(shards).expanduser(), np.dtype(meta["dtype"])
    train = ShardWindows(directory, meta["splits"]["train"]["shards"], dtype, seq_len)
    val = ShardWindows(directory, meta["splits"]["val"]["shards"], dtype, seq_len, max_tokens=val_tokens)
    for name, split in (("train", train), ("val", val)):
        if len(split) == 0:
            raise InputError(f"data.shards={shards}: the {name} split has no window of data.seq_len+1={seq_len + 1} "
                             f"tokens ({meta['splits'][name]['tokens']} tokens in all)")
    spec = DataSpec(task="lm", input_shape=(seq_len,), num_classes=tokenizer.vocab_size,
                    extra={"tokenizer": meta["tokenizer"], "train_tokens": meta["splits"]["train"]["tokens"]})
    return Dataset(spec=spec, train=train, val=val, name=Path(shards).name)


# ----------------------------------------------------------------------------------------------------- writing
class ShardWriter:
    """Appends documents' tokens to ``<split>_NNNN.bin`` files of at most ``shard_tokens`` tokens each."""

    def __init__(self, directory: Path, split: str, dtype: np.dtype, shard_tokens: int) -> None:
        self.directory, self.split, self.dtype, self.shard_tokens = directory, split, dtype, shard_tokens
        self.shards: list[dict] = []
        self.tokens = self.documents = 0
        self._file = None

    def add(self, document: np.ndarray) -> None:
        self.documents += 1
        self.tokens += len(document)
        data = document.astype(self.dtype)
        while len(data):
            if self._file is None or self.shards[-1]["tokens"] == self.shard_tokens:
                self._open_next()
            room = self.shard_tokens - self.shards[-1]["tokens"]
            self._file.write(data[:room].tobytes())
            self.shards[-1]["tokens"] += len(data[:room])
            data = data[room:]

    def _open_next(self) -> None:
        if self._file is not None:
            self._file.close()
        name = f"{self.split}_{len(self.shards):04d}.bin"
        self._file = open(self.directory / name, "wb")
        self.shards.append({"file": name, "tokens": 0})

    def close(self) -> dict:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
        return {"tokens": self.tokens, "documents": self.documents, "shards": self.shards}


SPLITS = ("train", "val")
LAYOUT_KEYS = ("shard_tokens", "streaming", "cache_dir")  # source keys that change how, not what, is read


def write_shards(shards: str, tokenizer: Tokenizer, source: dict, documents: Iterable[tuple[str, str]],
                 max_tokens: dict[str, int | None], shard_tokens: int, batch_documents: int = 1000) -> dict:
    """Tokenise (split, text) documents into a new shard set at ``shards``; returns its metadata.

    ``max_tokens[split]`` closes a split after that many tokens (None: all its documents); reading stops when
    every split is closed. Written in ``<shards>.partial.<pid>`` and renamed at the end, so a shard set on disk is
    always complete.
    """
    target = Path(shards).expanduser()
    work = target.with_name(f"{target.name}.partial.{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    dtype = token_dtype(tokenizer.vocab_size)
    writers = {split: ShardWriter(work, split, dtype, shard_tokens) for split in SPLITS}

    def full(split: str) -> bool:
        return max_tokens.get(split) is not None and writers[split].tokens >= max_tokens[split]

    try:
        for batch in _batches(documents, batch_documents):
            for (split, _), tokens in zip(batch, tokenizer.encode_batch([text for _, text in batch])):
                if not full(split):
                    writers[split].add(tokens)
            if all(full(split) for split in SPLITS):
                break
        meta = {"format": FORMAT, "tokenizer": tokenizer.identity(), "dtype": dtype.name, "source": source,
                "splits": {split: writer.close() for split, writer in writers.items()},
                "created": dt.datetime.now().isoformat(timespec="seconds")}
        (work / META).write_text(json.dumps(meta, indent=1))
        work.rename(target)
    except BaseException:
        for writer in writers.values():
            writer.close()
        shutil.rmtree(work, ignore_errors=True)
        raise
    return meta


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def source_documents(source: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """``data.source``'s documents as (split, text): its validation split then its train split, or — without a
    validation split — the train split once, each document routed by
    :func:`~research_optim.data.hf_text.is_held_out`."""
    from research_optim.data.hf_source import open_source
    from research_optim.data.hf_text import check_text_column, is_held_out, split_texts

    splits = open_source(source["path"], source.get("config_name"), data_files=source.get("data_files"),
                         streaming=source.get("streaming", True), cache_dir=source.get("cache_dir"))
    if source["train_split"] not in splits:
        raise InputError(f"data.source.train_split={source['train_split']!r} not in the source's splits "
                         f"{list(splits)}")
    train, column = splits[source["train_split"]], source["text_column"]
    check_text_column(train, column)
    if source.get("val_split") in splits:
        yield from (("val", text) for text in split_texts(splits[source["val_split"]], column))
        yield from (("train", text) for text in split_texts(train, column))
        return
    fraction = source["val_fraction"]
    if not 0.0 < fraction < 1.0:
        raise InputError(f"data.source.val_fraction must be in (0, 1), got {fraction}")
    for text in split_texts(train, column):
        yield ("val" if is_held_out(text, fraction) else "train"), text
