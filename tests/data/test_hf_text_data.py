"""Text corpora through `datasets` from local json/parquet/save_to_disk sources: byte tokens, packing, streaming."""
from __future__ import annotations

import json
import re

import datasets
import pytest
import torch

from research_optim.data.hf_text import is_held_out, load_hf_text
from research_optim.data.tokenizers import ByteTokenizer

TOKENIZER = ByteTokenizer()


def tagged_docs(count: int, start: int = 0) -> list[str]:
    """Documents of exactly 15 bytes ("<NNN>" + 10 filler), so with the end token each is 16 tokens."""
    return [f"<{i:03d}>" + "abcdefghij" for i in range(start, start + count)]


def write_jsonl(path, texts: list[str]) -> str:
    path.write_text("".join(json.dumps({"text": t, "meta": i}) + "\n" for i, t in enumerate(texts)))
    return str(path)


def doc_ids(rows: torch.Tensor) -> list[int]:
    """The tag of each 16-token row (one document per row when seq_len = 16 and documents are 16 tokens)."""
    return [int(re.match(r"<(\d{3})>", TOKENIZER.decode(row.tolist())).group(1)) for row in rows]


def collect(split, steps: int, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    batches = [b for _, b in zip(range(steps), split.train_batches(**kwargs))]
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])


def test_byte_tokenizer_round_trip():
    ids = TOKENIZER.encode("héllo")
    assert ids.tolist() == list("héllo".encode()) + [256]
    assert TOKENIZER.decode(ids.tolist()) == "héllo"


def test_jsonl_files_in_memory_pack_the_exact_byte_stream(tmp_path):
    train_texts = ["First story. ✓", "Second, longer story with more words.", "Third."]
    val_texts = ["A validation story that is long enough."]
    data = load_hf_text(
        path="json",
        data_files={"train": write_jsonl(tmp_path / "train.jsonl", train_texts),
                    "validation": write_jsonl(tmp_path / "val.jsonl", val_texts)},
        seq_len=8,
        cache_dir=str(tmp_path / "cache"),
    )
    assert data.spec.task == "lm" and data.spec.input_shape == (8,) and data.spec.num_classes == 257
    stream = torch.tensor([t for text in train_texts for t in TOKENIZER.encode(text).tolist()])
    count = (len(stream) - 1) // 8
    assert data.train.inputs.shape == (count, 8)
    torch.testing.assert_close(data.train.inputs.flatten(), stream[: count * 8])
    torch.testing.assert_close(data.train.targets.flatten(), stream[1 : count * 8 + 1])
    assert TOKENIZER.decode(data.val.inputs.flatten().tolist()).startswith(val_texts[0][:8])


def test_parquet_without_validation_split_holds_out_documents_by_hash(tmp_path):
    texts = tagged_docs(60)
    held = {i for i, text in enumerate(texts) if is_held_out(text, 0.25)}
    assert 5 <= len(held) <= 25  # the hash splits roughly by val_fraction
    datasets.Dataset.from_dict({"text": texts}).to_parquet(str(tmp_path / "corpus.parquet"))
    data = load_hf_text(path=str(tmp_path / "corpus.parquet"), seq_len=16, val_fraction=0.25,
                        cache_dir=str(tmp_path / "cache"))
    # in corpus order; each split's last document only serves as the final target
    assert doc_ids(data.val.inputs) == sorted(held)[:-1]
    assert doc_ids(data.train.inputs) == sorted(set(range(60)) - held)[:-1]


def test_save_to_disk_folder_in_memory_and_streaming(tmp_path):
    corpus = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"text": tagged_docs(24)}),
        "validation": datasets.Dataset.from_dict({"text": tagged_docs(4, start=100)}),
    })
    corpus.save_to_disk(str(tmp_path / "corpus"))
    in_memory = load_hf_text(path=str(tmp_path / "corpus"), seq_len=16)
    assert doc_ids(in_memory.train.inputs) == list(range(23))  # the last window needs one token past the end
    streamed = load_hf_text(path=str(tmp_path / "corpus"), seq_len=16, streaming=True, shuffle_buffer=0)
    assert doc_ids(streamed.val.inputs) == [100, 101, 102]
    inputs, _ = collect(streamed.train, steps=6, batch_size=4, seed=0)
    assert doc_ids(inputs) == list(range(24))  # unshuffled: the corpus in order, one epoch


TRAIN_DOCS = tagged_docs(40)
HELD_OUT = [i for i, text in enumerate(TRAIN_DOCS) if is_held_out(text, 0.2)]
TRAINED = [i for i in range(40) if i not in HELD_OUT]


@pytest.fixture
def streamed_jsonl(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", TRAIN_DOCS)
    return load_hf_text(path=path, seq_len=16, streaming=True, val_fraction=0.2, max_val_tokens=None,
                        shuffle_buffer=16)


def test_streaming_holds_out_documents_the_training_stream_never_sees(streamed_jsonl):
    assert 4 <= len(HELD_OUT) <= 14
    assert doc_ids(streamed_jsonl.val.inputs) == HELD_OUT[:-1]
    epoch = len(TRAINED)
    train_ids = doc_ids(collect(streamed_jsonl.train, steps=epoch // 4 + 1, batch_size=4, seed=0)[0][:epoch])
    assert sorted(train_ids) == TRAINED  # one epoch: every training document once, shuffled
    assert train_ids != TRAINED


def test_streaming_eval_pass_splits_the_stream_over_ranks_in_order(streamed_jsonl):
    whole = [x for x, _ in streamed_jsonl.train.eval_batches(5)]
    assert [len(x) for x in whole[:-1]] == [5] * (len(whole) - 1)
    whole_ids = doc_ids(torch.cat(whole))
    assert whole_ids == TRAINED[:-1]
    per_rank = [doc_ids(torch.cat([x for x, _ in streamed_jsonl.train.eval_batches(5, rank=r, world_size=2)]))
                for r in range(2)]
    assert per_rank == [whole_ids[0::2], whole_ids[1::2]]
    assert doc_ids(torch.cat([x for x, _ in streamed_jsonl.train.eval_batches(5, limit=7)])) == whole_ids[:7]


def test_streaming_is_deterministic_and_resumes_from_a_step(streamed_jsonl):
    steps = len(TRAINED) // 4 + 4  # into the second epoch
    first, first_targets = collect(streamed_jsonl.train, steps=steps, batch_size=4, seed=7)
    again, _ = collect(streamed_jsonl.train, steps=steps, batch_size=4, seed=7)
    resumed, resumed_targets = collect(streamed_jsonl.train, steps=steps - 5, batch_size=4, seed=7, start_step=5)
    other_seed, _ = collect(streamed_jsonl.train, steps=steps, batch_size=4, seed=8)
    torch.testing.assert_close(first, again)
    torch.testing.assert_close(resumed, first[5 * 4 :])
    torch.testing.assert_close(resumed_targets, first_targets[5 * 4 :])
    assert not torch.equal(first, other_seed)
    epoch = len(TRAINED)
    second_epoch = doc_ids(first[epoch : epoch + 8])
    assert second_epoch != doc_ids(first[:8])  # reshuffled each epoch


def ranks_split_the_global_batch(split, batch_size: int, world_size: int, steps: int, seed: int) -> None:
    """Each rank's batch is its slice of the batch one process gets: together, exactly that batch."""
    alone = [x for _, (x, _) in zip(range(steps), split.train_batches(batch_size, seed=seed))]
    ranks = [[x for _, (x, _) in zip(range(steps), split.train_batches(batch_size, seed=seed, rank=r,
                                                                         world_size=world_size))]
             for r in range(world_size)]
    for step, batch in enumerate(alone):
        torch.testing.assert_close(torch.cat([ranks[r][step] for r in range(world_size)]), batch)
        assert all(len(ranks[r][step]) == batch_size // world_size for r in range(world_size))


def test_streaming_ranks_split_each_global_batch_of_one_file(streamed_jsonl):
    ranks_split_the_global_batch(streamed_jsonl.train, batch_size=4, world_size=2, steps=len(TRAINED) // 2, seed=3)


def test_streaming_ranks_split_each_global_batch_of_two_files(tmp_path):
    # json, not parquet: datasets' streamed parquet reader sleeps 5 s whenever an iterator is dropped
    files = [write_jsonl(tmp_path / f"part{shard}.jsonl", tagged_docs(8, start=10 * shard)) for shard in range(2)]
    data = load_hf_text(path="json", data_files={"train": files, "validation": files[:1]}, seq_len=16,
                        streaming=True, shuffle_buffer=4)
    assert data.train.source.num_shards == 2
    assert doc_ids(data.val.inputs) == list(range(7))
    ranks_split_the_global_batch(data.train, batch_size=4, world_size=2, steps=6, seed=0)


def test_errors_name_the_config_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.path=.*does not exist"):
        load_hf_text(path=str(tmp_path / "missing.jsonl"))
    with pytest.raises(FileNotFoundError, match="data.data_files"):
        load_hf_text(path="json", data_files=str(tmp_path / "missing.jsonl"))
    path = write_jsonl(tmp_path / "train.jsonl", tagged_docs(4))
    with pytest.raises(ValueError, match="data.text_column='story' not in the data's columns"):
        load_hf_text(path=path, text_column="story", cache_dir=str(tmp_path / "cache"))
