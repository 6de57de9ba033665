"""Token shards: prepare from local files, memory-mapped random windows (resumable, split over ranks), refusals."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.conftest import compose_config
from research_optim.data.base import rank_slice
from research_optim.data.hf_text import is_held_out
from research_optim.data.token_shards import token_dtype, write_shards
from research_optim.data.tokenizers import ByteTokenizer, TiktokenTokenizer
from research_optim.errors import InputError, UserError
from research_optim.prepare import prepare
from tests.tiny_files import sentences, tiktoken_bpe_file, write_jsonl


def shard_config(tmp_path, *overrides: str, with_val: bool = True, tokenizer: str = "gpt2"):
    """data=c4 pointed at local jsonl files and (tokenizer gpt2) a local GPT-2-rules BPE file."""
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": t} for t in sentences(120, seed=1)])
    files = {"train": str(train)}
    if with_val:
        files["validation"] = str(write_jsonl(tmp_path / "val.jsonl", [{"text": t} for t in sentences(20, seed=2)]))
    bpe = tiktoken_bpe_file(tmp_path / "tiny.tiktoken")
    data_files = "{" + ",".join(f"{k}:'{v}'" for k, v in files.items()) + "}"
    chosen = [f"data/tokenizer={tokenizer}"] + ([f"data.tokenizer.path={bpe}"] if tokenizer == "gpt2" else [])
    return compose_config(["data=c4", *chosen,
                           f"data.shards={tmp_path / 'shards'}", "data.source.path=json",
                           f"data.source.data_files={data_files}", "data.source.config_name=null",
                           "data.source.shard_tokens=500", "data.seq_len=16", "data.val_tokens=null",
                           f"data.source.cache_dir={tmp_path / 'cache'}", *overrides]).data


def load(data):
    from research_optim.build import build_data

    return build_data(data)


def stream(tokenizer, texts):
    return np.concatenate([tokenizer.encode(t) for t in texts])


def test_prepare_writes_the_exact_token_stream_in_uint16_shards(tmp_path):
    data = shard_config(tmp_path)
    meta = prepare(data)
    tokenizer = TiktokenTokenizer("gpt2", data.tokenizer.path)
    expected = {"train": stream(tokenizer, sentences(120, seed=1)), "val": stream(tokenizer, sentences(20, seed=2))}
    assert meta["dtype"] == "uint16" and meta["tokenizer"] == tokenizer.identity()
    for split, tokens in expected.items():
        info = meta["splits"][split]
        assert info["tokens"] == len(tokens) and info["documents"] == (120 if split == "train" else 20)
        assert [s["tokens"] for s in info["shards"][:-1]] == [500] * (len(info["shards"]) - 1)
        on_disk = np.concatenate([np.fromfile(tmp_path / "shards" / s["file"], dtype=np.uint16)
                                  for s in info["shards"]])
        np.testing.assert_array_equal(on_disk, tokens)
    assert json.loads((tmp_path / "shards" / "meta.json").read_text()) == meta
    assert not list(tmp_path.glob("shards.partial*"))


def test_vocabularies_above_65536_ids_are_stored_as_uint32(tmp_path):
    class WideBytes(ByteTokenizer):
        vocab_size = 70_000
        eos_id = 69_999

    assert token_dtype(65_536) == np.uint16 and token_dtype(65_537) == np.uint32
    meta = write_shards(str(tmp_path / "wide"), WideBytes(), {"path": "x"},
                        [("train", "abc"), ("val", "d")], {}, shard_tokens=100)
    assert meta["dtype"] == "uint32"
    np.testing.assert_array_equal(np.fromfile(tmp_path / "wide" / "train_0000.bin", dtype=np.uint32),
                                  [97, 98, 99, 69_999])


def test_without_validation_split_documents_are_held_out_by_hash_and_limits_apply(tmp_path):
    data = shard_config(tmp_path, "data.source.val_fraction=0.2", "data.source.max_train_tokens=300",
                        with_val=False)
    meta = prepare(data)
    tokenizer = TiktokenTokenizer("gpt2", data.tokenizer.path)
    texts = sentences(120, seed=1)
    held = [t for t in texts if is_held_out(t, 0.2)]
    assert 10 <= len(held) <= 40
    assert meta["splits"]["val"]["tokens"] == len(stream(tokenizer, held))
    kept = [t for t in texts if not is_held_out(t, 0.2)]
    train_tokens = meta["splits"]["train"]["tokens"]
    assert 300 <= train_tokens < 300 + max(len(tokenizer.encode(t)) for t in kept)  # the document that crossed it
    on_disk = np.fromfile(tmp_path / "shards" / "train_0000.bin", dtype=np.uint16)
    np.testing.assert_array_equal(on_disk, stream(tokenizer, kept)[:train_tokens])


def test_random_windows_are_resumable_split_over_ranks_and_real_windows(tmp_path):
    data = shard_config(tmp_path)
    prepare(data)
    dataset = load(data)
    assert dataset.spec.task == "lm" and dataset.spec.vocab_size == 263 and dataset.spec.input_shape == (16,)
    tokenizer = TiktokenTokenizer("gpt2", data.tokenizer.path)
    corpus = stream(tokenizer, sentences(120, seed=1))
    shards = [corpus[i : i + 500] for i in range(0, len(corpus), 500)]
    train = dataset.train
    run = [b for _, b in zip(range(6), train.train_batches(8, seed=3))]
    for x, y in run:  # each row is a window of one shard; targets are the inputs shifted by one
        assert torch.equal(x[:, 1:], y[:, :-1])
        for row in torch.cat([x, y[:, -1:]], dim=1).numpy():
            assert any(np.array_equal(row, shard[o : o + 17]) for shard in shards for o in range(len(shard) - 16))
    resumed = [b for _, b in zip(range(2), train.train_batches(8, seed=3, start_step=4))]
    for (x, y), (rx, ry) in zip(run[4:], resumed):
        assert torch.equal(x, rx) and torch.equal(y, ry)
    for rank in range(4):
        x, _ = next(train.train_batches(8, seed=3, rank=rank, world_size=4))
        assert torch.equal(x, run[0][0][rank_slice(8, rank, 4)])
    other_seed, _ = next(train.train_batches(8, seed=4))
    assert not torch.equal(other_seed, run[0][0])


def test_evaluation_reads_consecutive_windows_once_over_ranks(tmp_path):
    data = shard_config(tmp_path, "data.val_tokens=200")
    prepare(data)
    val = load(data).val
    tokenizer = TiktokenTokenizer("gpt2", data.tokenizer.path)
    tokens = torch.from_numpy(stream(tokenizer, sentences(20, seed=2))[:200])
    windows = (200 - 1) // 16
    assert len(val) == windows
    one = torch.cat([x for x, _ in val.eval_batches(5)])
    assert torch.equal(one, tokens[: windows * 16].view(windows, 16))
    ranks = [torch.cat([x for x, _ in val.eval_batches(5, rank=r, world_size=2)]) for r in range(2)]
    assert torch.equal(torch.cat(ranks).sort(0).values, one.sort(0).values)
    assert torch.equal(torch.cat([x for x, _ in val.eval_batches(4, limit=3)]), one[:3])


def test_shards_of_another_tokenizer_or_source_are_refused(tmp_path):
    prepare(shard_config(tmp_path))
    bytes_data = shard_config(tmp_path, tokenizer="bytes")
    with pytest.raises(InputError, match=r"prepared with tokenizer gpt2 \(tiktoken, vocabulary 263.* but "
                                         r"data.tokenizer is bytes \(bytes, vocabulary 257"):
        load(bytes_data)
    other_bpe = tiktoken_bpe_file(tmp_path / "other.tiktoken", merges=(b"th",))
    with pytest.raises(InputError, match="prepared with tokenizer"):
        prepare(shard_config(tmp_path, f"data.tokenizer.path={other_bpe}"))
    with pytest.raises(InputError, match=r"another data.source \(val_fraction: 0.005 there, 0.1 here\)"):
        load(shard_config(tmp_path, "data.source.val_fraction=0.1"))
    load(shard_config(tmp_path, "data.source.shard_tokens=7", "data.source.streaming=false"))  # layout only
    with pytest.raises(InputError, match="holds no prepared shards .*python -m research_optim.prepare"):
        load(shard_config(tmp_path, f"data.shards={tmp_path / 'nowhere'}"))


def test_the_door_refuses_shards_of_another_tokenizer_before_anything_is_written(tmp_path):
    from research_optim.app import run

    prepare(shard_config(tmp_path))
    cfg = compose_config(["data=c4", "data/tokenizer=bytes", f"data.shards={tmp_path / 'shards'}",
                          "model=gpt", f"run.root={tmp_path / 'runs'}", "train.progress=false"])
    cfg.data.source = shard_config(tmp_path).source
    with pytest.raises(UserError, match="prepared with tokenizer gpt2"):
        run(cfg)
    cfg.data.shards = str(tmp_path / "elsewhere")
    with pytest.raises(UserError, match="elsewhere holds no prepared shards"):
        run(cfg)
    assert not (tmp_path / "runs").exists()


def test_a_failed_prepare_leaves_no_shard_set(tmp_path):
    def documents():
        yield "train", "one document"
        raise RuntimeError("the source broke")

    with pytest.raises(RuntimeError, match="the source broke"):
        write_shards(str(tmp_path / "shards"), ByteTokenizer(), {}, documents(), {}, shard_tokens=10,
                     batch_documents=1)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_prepare_command_then_train_on_the_shards(tmp_path):
    """The real command line, then a tiny GPT run on the shards it wrote; preparing again does nothing."""
    from research_optim.app import run

    data = shard_config(tmp_path)
    overrides = [f"{key}={value}" for key, value in {
        "data": "c4", "data/tokenizer": "gpt2", "data.tokenizer.path": data.tokenizer.path,
        "data.shards": data.shards, "data.source.path": "json", "data.source.config_name": "null",
        "data.source.data_files": "{train:'%s',validation:'%s'}" % (data.source.data_files.train,
                                                                     data.source.data_files.validation),
        "data.source.shard_tokens": 500, "data.seq_len": 16, "data.source.cache_dir": data.source.cache_dir,
    }.items()]
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    first = subprocess.run([sys.executable, "-m", "research_optim.prepare", *overrides], capture_output=True,
                           text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "wrote" in first.stdout and "train" in first.stdout
    again = subprocess.run([sys.executable, "-m", "research_optim.prepare", *overrides], capture_output=True,
                           text=True, env=env, timeout=300)
    assert again.returncode == 0 and "already prepared" in again.stdout
    with_bytes = [o for o in overrides if not o.startswith(("data/tokenizer", "data.tokenizer"))]
    refused = subprocess.run([sys.executable, "-m", "research_optim.prepare", *with_bytes, "data/tokenizer=bytes"],
                             capture_output=True, text=True, env=env, timeout=300)
    assert refused.returncode == 2 and refused.stderr.startswith("error: data.shards=")
    cfg = compose_config([*overrides, "model=gpt", "model.n_layer=1", "model.n_embd=32", "model.n_head=2",
                          "train.steps=20", "train.batch_size=8", "train.eval_every=10", "train.log_every=10",
                          "train.progress=false", f"run.root={tmp_path / 'runs'}"])
    summary = run(cfg)
    assert summary["status"] == "completed" and summary["val_loss"] < np.log(263)
