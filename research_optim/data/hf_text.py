"""A text corpus through Hugging Face ``datasets``, tokenised and packed into fixed-length LM windows.

Tokenizer: ``data.tokenizer`` (``data/tokenizers.py``), by default UTF-8 bytes plus an end-of-document id 256: no
download, no vocabulary file, and every corpus maps to the same 257 ids, so losses are comparable across corpora
(nats per byte). Corpora read many times are better tokenised once into shards (``data/token_shards.py``).

Documents are concatenated, each followed by end-of-document, and cut into windows of ``seq_len + 1`` tokens that
overlap by one: (inputs, targets) = (window[:-1], window[1:]), so every token is a target exactly once.

Two modes. In memory (``streaming=False``): the whole (or ``max_train_tokens`` of the) corpus becomes a
:class:`TensorDataset`. Streaming (``streaming=True``, for corpora larger than memory): the train split is a
:class:`StreamingWindows` that reads and shuffles the stream lazily and splits each global batch over ranks;
validation is always materialised (the first ``max_val_tokens``) so evaluation is a fixed, finite pass.
"""
from __future__ import annotations

import functools
import hashlib
import itertools
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor

from research_optim.data.base import DataSpec, Dataset, TensorDataset, rank_slice
from research_optim.data.hf_source import open_source
from research_optim.data.tokenizers import ByteTokenizer, Tokenizer


def pack_windows(token_chunks: Iterable[np.ndarray], seq_len: int) -> Iterator[np.ndarray]:
    """Windows of ``seq_len + 1`` tokens from a stream of token chunks, consecutive windows sharing one token."""
    buffer = np.empty(0, dtype=np.int64)
    for chunk in token_chunks:
        buffer = np.concatenate([buffer, chunk])
        start = 0
        while len(buffer) - start >= seq_len + 1:
            yield buffer[start : start + seq_len + 1]
            start += seq_len
        buffer = buffer[start:]


def windows_to_split(tokens: np.ndarray, seq_len: int) -> TensorDataset:
    """All complete windows of a token array as a TensorDataset of (inputs, targets), each (n, seq_len)."""
    count = (len(tokens) - 1) // seq_len
    if count < 1:
        raise ValueError(f"the text has {len(tokens)} tokens, fewer than one window of data.seq_len+1={seq_len + 1}")
    t = torch.from_numpy(np.ascontiguousarray(tokens[: count * seq_len + 1]))
    return TensorDataset(t[:-1].view(count, seq_len), t[1:].view(count, seq_len))


def split_texts(split: Any, text_column: str) -> Iterator[str]:
    """The documents of a split (map-style or streamed), read in batches of rows."""
    for batch in split.iter(batch_size=1000):
        yield from batch[text_column]


def _tokenize_until(texts: Iterable[str], tokenizer: Tokenizer, max_tokens: int | None) -> tuple[np.ndarray, int]:
    """Concatenated tokens of documents (until at least ``max_tokens``) and how many documents were used."""
    chunks, total, docs = [], 0, 0
    for text in texts:
        if max_tokens is not None and total >= max_tokens:
            break
        chunk = tokenizer.encode(text)
        chunks.append(chunk)
        total += len(chunk)
        docs += 1
    tokens = np.concatenate(chunks) if chunks else np.empty(0, dtype=np.int64)
    return (tokens[: max_tokens + 1] if max_tokens is not None else tokens), docs


def is_held_out(text: str, val_fraction: float) -> bool:
    """Whether a document belongs to validation: decided by a hash of its text alone, so the split is the same
    in memory and streamed, under any shuffling or sharding, and duplicated documents never straddle it."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64 < val_fraction


def _not_held_out(text: str, val_fraction: float) -> bool:
    return not is_held_out(text, val_fraction)


def check_text_column(split: Any, text_column: str) -> None:
    columns = split.column_names
    if columns is not None and text_column not in columns:
        raise ValueError(f"data.text_column={text_column!r} not in the data's columns {columns}")


class StreamingWindows:
    """Endless, resumable LM batches from a ``datasets.IterableDataset``, split over ranks like in-memory data.

    Every rank reads the same stream — ``shuffle(seed, buffer_size)`` (shard order + a shuffle buffer), epoch ``e``
    reshuffled with ``set_epoch(e)`` — packs the same windows, and keeps its :func:`rank_slice` of each global
    batch: N ranks train on exactly the batches one process would (the price: each rank reads and tokenises the
    whole stream). ``start_step`` replays and discards the first batches: exact resumption from the step alone,
    at the cost of re-reading (not re-training on) that data.
    """

    def __init__(
        self, source: Any, text_column: str, seq_len: int, tokenizer: Tokenizer, shuffle_buffer: int = 10_000
    ) -> None:
        self.source, self.text_column, self.seq_len = source, text_column, seq_len
        self.tokenizer, self.shuffle_buffer = tokenizer, shuffle_buffer

    def _documents(self, seed: int) -> Iterator[str]:
        stream = self.source.shuffle(seed=seed, buffer_size=self.shuffle_buffer) if self.shuffle_buffer > 0 else self.source
        epoch = 0
        while True:
            stream.set_epoch(epoch)
            count = 0
            for text in split_texts(stream, self.text_column):
                count += 1
                yield text
            if count == 0:
                raise ValueError("the streamed train split has no documents")
            epoch += 1

    def _windows(self, documents: Iterable[str]) -> Iterator[np.ndarray]:
        return pack_windows((self.tokenizer.encode(text) for text in documents), self.seq_len)

    def train_batches(
        self, batch_size: int, seed: int, start_step: int = 0, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """(inputs, targets) of this rank's part of each global batch of ``batch_size`` windows, from
        ``start_step`` on; deterministic in the seed."""
        windows = self._windows(self._documents(seed))
        part = rank_slice(batch_size, rank, world_size)
        step = 0
        while True:
            batch = [next(windows) for _ in range(batch_size)]
            if step >= start_step:
                stacked = torch.from_numpy(np.stack(batch[part]))
                yield stacked[:, :-1], stacked[:, 1:]
            step += 1

    def eval_batches(self, batch_size: int, rank: int = 0, world_size: int = 1,
                     limit: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """One unshuffled pass over the stream's first ``limit`` windows (None: all), window i on rank
        i mod world_size, ``batch_size`` per forward pass (the last may be short).

        A full pass over a large corpus is long: pass ``limit``, or take as many batches as needed and stop.
        """
        windows = itertools.islice(self._windows(split_texts(self.source, self.text_column)), limit)
        mine = itertools.islice(windows, rank, None, world_size)
        while batch := list(itertools.islice(mine, batch_size)):
            stacked = torch.from_numpy(np.stack(batch))
            yield stacked[:, :-1], stacked[:, 1:]


def load_hf_text(
    path: str = "roneneldan/TinyStories",
    config_name: str | None = None,
    data_files: Any = None,
    text_column: str = "text",
    train_split: str = "train",
    val_split: str | None = "validation",
    seq_len: int = 256,
    streaming: bool = False,
    max_train_tokens: int | None = None,
    max_val_tokens: int | None = 1_000_000,
    val_fraction: float = 0.05,
    shuffle_buffer: int = 10_000,
    cache_dir: str | None = None,
    tokenizer: Tokenizer | None = None,
) -> Dataset:
    """An LM data set from any ``datasets`` text source (see :func:`open_source` for ``path``), tokenised by
    ``tokenizer`` (None: bytes).

    Validation: ``val_split`` when the source has it; otherwise the train documents that :func:`is_held_out`
    assigns to validation (about ``val_fraction`` of them, by a hash of the text), which training then never sees.
    Either way validation is materialised: its first ``max_val_tokens`` tokens (None: all).
    """
    if seq_len < 1:
        raise ValueError(f"data.seq_len must be ≥ 1, got {seq_len}")
    tokenizer = tokenizer or ByteTokenizer()
    splits = open_source(path, config_name, data_files=data_files, streaming=streaming, cache_dir=cache_dir)
    if train_split not in splits:
        raise ValueError(f"data.train_split={train_split!r} not in the source's splits {list(splits)}")
    train_source = splits[train_split]
    check_text_column(train_source, text_column)
    if val_split is not None and val_split in splits:
        val_texts: Iterable[str] = split_texts(splits[val_split], text_column)
        keep_for_train = None
    else:
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
        val_texts = (t for t in split_texts(train_source, text_column) if is_held_out(t, val_fraction))
        keep_for_train = functools.partial(_not_held_out, val_fraction=val_fraction)
    val_tokens, _ = _tokenize_until(val_texts, tokenizer, max_val_tokens)

    if streaming:
        if keep_for_train is not None:
            train_source = train_source.filter(keep_for_train, input_columns=[text_column])
        train: TensorDataset | StreamingWindows = StreamingWindows(
            train_source, text_column, seq_len, tokenizer, shuffle_buffer
        )
    else:
        train_texts = split_texts(train_source, text_column)
        if keep_for_train is not None:
            train_texts = filter(keep_for_train, train_texts)
        train_tokens, _ = _tokenize_until(train_texts, tokenizer, max_train_tokens)
        train = windows_to_split(train_tokens, seq_len)

    spec = DataSpec(
        task="lm",
        input_shape=(seq_len,),
        num_classes=tokenizer.vocab_size,
        extra={"tokenizer": tokenizer.identity(), "source": path, "streaming": streaming},
    )
    label = path.rstrip("/").split("/")[-1] + (f"/{config_name}" if config_name else "")
    return Dataset(spec=spec, train=train, val=windows_to_split(val_tokens, seq_len), name=label)
