"""Tokenizers: UTF-8 bytes, GPT-2 BPE through ``tiktoken``, and any Hugging Face ``tokenizers`` tokenizer.json.

Each turns a document into int64 ids followed by its end-of-document id (``encode``), or a text into ids alone
(``encode_ordinary``), and says who it is (``identity``): kind, name, vocabulary size, end-of-document id and a
SHA-256 of the vocabulary itself (not of a file path), so token shards and runs can refuse another tokenizer.

Named tokenizers (``tiktoken.get_encoding('gpt2')``, a hub id for ``tokenizers``) download their files at first
use and read them from their cache afterwards; on a machine without internet, point ``path`` at a local file.
The config's ``data.tokenizer`` node builds one of these classes (``conf/data/tokenizer/``).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

import numpy as np

from research_optim.errors import InputError


class Tokenizer:
    """What every tokenizer offers; a subclass supplies ``encode_ordinary``, ``decode`` and its vocabulary hash."""

    kind: str
    name: str
    vocab_size: int
    eos_id: int

    def encode_ordinary(self, text: str) -> np.ndarray:
        """The ids of ``text`` (int64), nothing added."""
        raise NotImplementedError

    def decode(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    def encode(self, text: str) -> np.ndarray:
        """One document: its ids followed by end-of-document."""
        return np.append(self.encode_ordinary(text), self.eos_id)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """Each text as a document (ids + end-of-document)."""
        return [self.encode(text) for text in texts]

    def identity(self) -> dict:
        return {"kind": self.kind, "name": self.name, "vocab_size": self.vocab_size, "eos_id": self.eos_id,
                "sha256": self._vocabulary_hash()}

    def _vocabulary_hash(self) -> str:
        raise NotImplementedError


def same_tokenizer(a: dict, b: dict) -> bool:
    """Whether two identity records describe the same ids for the same text (names may differ)."""
    keys = ("sha256", "vocab_size", "eos_id")
    return all(a.get(k) == b.get(k) for k in keys)


def describe(identity: dict) -> str:
    return (f"{identity['name']} ({identity['kind']}, vocabulary {identity['vocab_size']}, "
            f"sha256 {identity['sha256'][:12]})")


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes (ids 0–255) + one end-of-document id 256: no file, and every corpus shares its 257 ids."""

    kind = name = "bytes"
    eos_id = 256
    vocab_size = 257

    def encode_ordinary(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def _vocabulary_hash(self) -> str:
        return hashlib.sha256(b"utf-8 bytes 0-255, end-of-document 256").hexdigest()


def _existing(path: str, key: str) -> Path:
    local = Path(path).expanduser()
    if not local.is_file():
        raise InputError(f"{key}={path!r} is not a file: point it at the tokenizer's local file")
    return local


class TiktokenTokenizer(Tokenizer):
    """A ``tiktoken`` byte-level BPE: the encoding ``name``, or GPT-2's rules over a local BPE file (``path``).

    A local file is in tiktoken's format (one "base64-token rank" per line, e.g. r50k_base.tiktoken, whose ranks
    are GPT-2's); it gets GPT-2's pre-tokenisation pattern and ``<|endoftext|>`` as the id after the last rank.
    """

    kind = "tiktoken"
    LOCAL_RULES = ("gpt2", "r50k_base")  # encodings whose rules a local file takes: GPT-2's pattern, one special

    def __init__(self, name: str = "gpt2", path: str | None = None) -> None:
        import tiktoken

        self.name = name
        if path is None:
            self.encoding = _named_encoding(name)
        else:
            if name not in self.LOCAL_RULES:
                raise InputError(f"data.tokenizer.name={name!r} with a local file: a local BPE file takes GPT-2's "
                                 f"rules (name one of {', '.join(self.LOCAL_RULES)}); other encodings load by name")
            from tiktoken.load import load_tiktoken_bpe
            from tiktoken_ext.openai_public import ENDOFTEXT, r50k_pat_str

            file = _existing(path, "data.tokenizer.path")
            try:
                ranks = load_tiktoken_bpe(str(file))
            except Exception as error:  # noqa: BLE001 — any parse failure is a wrong file
                raise InputError(f"data.tokenizer.path={path!r} is not a tiktoken BPE file ({error})") from None
            self.encoding = tiktoken.Encoding(name=f"{name}@{Path(path).name}", pat_str=r50k_pat_str,
                                              mergeable_ranks=ranks, special_tokens={ENDOFTEXT: len(ranks)})
        self.vocab_size = self.encoding.n_vocab
        self.eos_id = self.encoding.eot_token

    def encode_ordinary(self, text: str) -> np.ndarray:
        return np.asarray(self.encoding.encode_ordinary(text), dtype=np.int64)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        return [np.append(np.asarray(ids, dtype=np.int64), self.eos_id)
                for ids in self.encoding.encode_ordinary_batch(texts)]

    def decode(self, ids: Iterable[int]) -> str:
        return self.encoding.decode(list(ids))

    def _vocabulary_hash(self) -> str:
        digest = hashlib.sha256(self.encoding._pat_str.encode())
        for token, rank in sorted(self.encoding._mergeable_ranks.items(), key=lambda item: item[1]):
            digest.update(rank.to_bytes(4, "little") + len(token).to_bytes(2, "little") + token)
        for special, rank in sorted(self.encoding._special_tokens.items()):
            digest.update(special.encode() + rank.to_bytes(4, "little"))
        return digest.hexdigest()


def _named_encoding(name: str):
    import tiktoken

    if name not in tiktoken.list_encoding_names():
        raise InputError(f"data.tokenizer.name={name!r} is not a tiktoken encoding: choose one of "
                         f"{', '.join(tiktoken.list_encoding_names())}")
    try:
        return tiktoken.get_encoding(name)
    except Exception as error:  # noqa: BLE001 — a download failure: say what to do offline
        raise InputError(f"tiktoken could not load encoding {name!r} ({type(error).__name__}): it downloads its "
                         "BPE file at first use and caches it (TIKTOKEN_CACHE_DIR); without internet, set "
                         "data.tokenizer.path to a local .tiktoken file") from None


class HFTokenizer(Tokenizer):
    """A Hugging Face ``tokenizers`` tokenizer from a local tokenizer.json (``path``), else the hub id ``name``.

    Texts are encoded without the tokenizer's own templates (``add_special_tokens=False``); each document ends
    with ``eos``, a token of the vocabulary (T5: ``</s>``, GPT-2: ``<|endoftext|>``).
    """

    kind = "hf"

    def __init__(self, name: str = "google-t5/t5-base", path: str | None = None, eos: str = "</s>") -> None:
        from tokenizers import Tokenizer as TokenizerFile

        self.name = name
        if path is not None:
            file = _existing(path, "data.tokenizer.path")
            try:
                self.tokenizer = TokenizerFile.from_file(str(file))
            except Exception as error:  # noqa: BLE001 — any parse failure is a wrong file
                raise InputError(f"data.tokenizer.path={path!r} is not a tokenizers tokenizer.json ({error})") from None
        else:
            try:
                self.tokenizer = TokenizerFile.from_pretrained(name)
            except Exception as error:  # noqa: BLE001 — a download failure: say what to do offline
                raise InputError(f"could not load tokenizer {name!r} from the Hugging Face hub or its cache "
                                 f"({type(error).__name__}); without internet, set data.tokenizer.path to a local "
                                 "tokenizer.json") from None
        eos_id = self.tokenizer.token_to_id(eos)
        if eos_id is None:
            raise InputError(f"data.tokenizer.eos={eos!r} is not a token of tokenizer {self.name}: name its "
                             "end-of-text token")
        self.eos_id = eos_id
        self.vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode_ordinary(self, text: str) -> np.ndarray:
        return np.asarray(self.tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        return [np.append(np.asarray(encoded.ids, dtype=np.int64), self.eos_id)
                for encoded in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def _vocabulary_hash(self) -> str:
        return hashlib.sha256(self.tokenizer.to_str().encode()).hexdigest()
