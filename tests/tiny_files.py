"""Small real files the tests write: tokenizer files, text corpora, image folders (no download anywhere)."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np

WORDS = ("the quick brown fox jumps over the lazy dog while the cat sleeps in the warm sun and the bird sings "
         "a song of spring").split()


def sentences(count: int, seed: int = 0, words: int = 12) -> list[str]:
    """``count`` reproducible sentences drawn from a small vocabulary."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=words)) + "." for _ in range(count)]


def tiktoken_bpe_file(path: Path, merges: tuple[bytes, ...] = (b"th", b"he", b"the", b" the", b"ox", b" f")) -> Path:
    """A tiktoken-format BPE file: the 256 single bytes, then ``merges`` (each a pair of earlier tokens)."""
    tokens = [bytes([b]) for b in range(256)] + list(merges)
    path.write_text("".join(f"{base64.b64encode(t).decode()} {rank}\n" for rank, t in enumerate(tokens)))
    return path


def hf_tokenizer_file(path: Path, vocab_size: int = 300, corpus: list[str] | None = None) -> Path:
    """A byte-level BPE tokenizer.json trained on ``corpus`` with specials <pad>, </s>, <unk>."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(corpus or sentences(200), trainer)
    tokenizer.save(str(path))
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def image_folder(root: Path, classes: dict[str, int], size: int = 12, seed: int = 0) -> Path:
    """An ImageFolder tree ``root/<class>/<i>.png`` with ``classes[name]`` RGB images each; class k is tinted k."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for k, (name, count) in enumerate(sorted(classes.items())):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 128, size=(size, size, 3), dtype=np.uint8)
            pixels[..., k % 3] += np.uint8(100)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root
