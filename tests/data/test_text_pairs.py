"""GLUE-style sequence classification from local files: layout, truncation, labels; fine-tuning a pretrained
LLaMA on it end to end; weights of another shape refused before anything is written."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import compose_config
from research_optim.data.base import PAD_ID
from research_optim.data.text_pairs import encode_example, fit_lengths, load_text_pairs
from research_optim.data.tokenizers import ByteTokenizer
from research_optim.errors import InputError
from tests.tiny_files import hf_tokenizer_file, sentences, write_jsonl

BYTES = ByteTokenizer()


def paraphrase_files(tmp_path, count: int = 64) -> dict[str, str]:
    """Pairs whose label says whether the second sentence repeats the first."""
    def rows(seed: int) -> list[dict]:
        first, other = sentences(count, seed=seed, words=5), sentences(count, seed=seed + 100, words=5)
        return [{"sentence1": a, "sentence2": a if i % 2 else b, "label": i % 2}
                for i, (a, b) in enumerate(zip(first, other))]

    return {"train": str(write_jsonl(tmp_path / "train.jsonl", rows(1))),
            "validation": str(write_jsonl(tmp_path / "val.jsonl", rows(2)[:16]))}


def test_pairs_are_text_eos_text_eos_cut_longest_first_and_right_padded():
    assert fit_lengths([10, 3], 8) == [5, 3] and fit_lengths([4, 4], 6) == [3, 3] and fit_lengths([2, 1], 9) == [2, 1]
    ids = encode_example(["abcdefghij", "xyz"], BYTES, seq_len=10)
    assert ids.tolist() == [*b"abcde", 256, *b"xyz", 256]
    short = encode_example(["ab"], BYTES, seq_len=6)
    assert short.tolist() == [*b"ab", 256, PAD_ID, PAD_ID, PAD_ID]


def test_local_jsonl_pairs_load_with_their_classes(tmp_path):
    files = paraphrase_files(tmp_path)
    data = load_text_pairs(BYTES, path="json", config_name=None, data_files=files, seq_len=48, num_classes=2,
                           cache_dir=str(tmp_path / "cache"))
    assert data.spec.kind == "text" and data.spec.task == "classification"
    assert (data.spec.num_classes, data.spec.vocab_size, data.spec.input_shape) == (2, 257, (48,))
    assert data.train.inputs.shape == (64, 48) and data.val.inputs.shape == (16, 48)
    assert data.train.targets.tolist() == [i % 2 for i in range(64)]
    first = bytes(t for t in data.train.inputs[1].tolist() if 0 <= t < 256).decode()
    assert first.startswith(sentences(64, seed=1, words=5)[1][:10])


def test_labels_without_a_class_count_or_outside_it_are_refused(tmp_path):
    files = paraphrase_files(tmp_path)
    with pytest.raises(ValueError, match="not a ClassLabel: set data.num_classes"):
        load_text_pairs(BYTES, path="json", config_name=None, data_files=files, cache_dir=str(tmp_path / "c"))
    unlabelled = write_jsonl(tmp_path / "test.jsonl", [{"sentence1": "a", "sentence2": "b", "label": -1}])
    with pytest.raises(ValueError, match=r"val labels outside \[0, 2\) \(from -1 to -1\)"):
        load_text_pairs(BYTES, path="json", config_name=None, num_classes=2, cache_dir=str(tmp_path / "c"),
                        data_files={"train": files["train"], "validation": str(unlabelled)})
    single = write_jsonl(tmp_path / "single.jsonl", [{"sentence1": "a", "label": 0}, {"sentence1": "b", "label": 1}])
    with pytest.raises(ValueError, match=r"data columns \['sentence2'\] not found"):
        load_text_pairs(BYTES, path="json", config_name=None, data_files={"train": str(single)}, num_classes=2,
                        val_fraction=0.5, cache_dir=str(tmp_path / "c"))


def glue_overrides(tmp_path, tokenizer_file) -> list[str]:
    files = paraphrase_files(tmp_path)
    return ["data=glue_mrpc", "data/tokenizer=hf_file", f"data.tokenizer.path={tokenizer_file}", "data.path=json",
            "data.config_name=null", f"data.data_files={{train:'{files['train']}',validation:'{files['validation']}'}}",
            "data.num_classes=2", "data.seq_len=40", f"data.cache_dir={tmp_path / 'cache'}",
            "model=llama_60m", "model.n_layer=2", "model.n_head=2", "model.n_embd=32", "model.intermediate_size=64"]


@pytest.mark.slow
def test_fine_tunes_a_pretrained_llama_and_refuses_weights_of_another_size(tmp_path, tiny_run):
    """A tiny LLaMA LM's weights (saved here) start a classifier on local MRPC-style pairs, through the config."""
    from safetensors.torch import save_file

    from research_optim.build import instantiate
    from research_optim.data.base import DataSpec
    from research_optim.models.llama import Llama

    tokenizer_file = hf_tokenizer_file(tmp_path / "tokenizer.json", corpus=sentences(300, words=5))
    overrides = glue_overrides(tmp_path, tokenizer_file)
    vocab_size = instantiate(compose_config(overrides).data.tokenizer).vocab_size
    torch.manual_seed(0)
    lm = Llama(DataSpec(task="lm", input_shape=(40,), num_classes=vocab_size), n_layer=2, n_head=2, n_embd=32,
               intermediate_size=64)
    save_file(lm.state_dict(), tmp_path / "lm.safetensors")
    summary = tiny_run(*overrides, f"model.pretrained={tmp_path / 'lm.safetensors'}", "optimizer.lr=3e-3",
                       "train.steps=60")
    assert summary["status"] == "completed" and np.isfinite(summary["val_loss"])

    save_file(Llama(DataSpec(task="lm", input_shape=(40,), num_classes=vocab_size), n_layer=2, n_head=2,
                    n_embd=48, intermediate_size=64).state_dict(), tmp_path / "wide.safetensors")
    root = tmp_path / "refused_runs"
    with pytest.raises(InputError, match=r"tensor model.embed_tokens.weight has shape \(\d+, 48\) there and "
                                         r"\(\d+, 32\) in the model"):
        tiny_run(*overrides, f"model.pretrained={tmp_path / 'wide.safetensors'}", root=root)
    assert not root.exists()  # refused before anything was written
