"""Tokenizers from local files: tiktoken BPE (GPT-2 rules), Hugging Face tokenizer.json, bytes; identities; errors."""
from __future__ import annotations

import numpy as np
import pytest

from research_optim.data.tokenizers import (ByteTokenizer, HFTokenizer, TiktokenTokenizer, describe,
                                            same_tokenizer)
from research_optim.errors import InputError
from tests.tiny_files import hf_tokenizer_file, sentences, tiktoken_bpe_file


def test_tiktoken_local_file_uses_gpt2_rules_and_merges(tmp_path):
    tokenizer = TiktokenTokenizer("gpt2", str(tiktoken_bpe_file(tmp_path / "tiny.tiktoken")))
    assert (tokenizer.vocab_size, tokenizer.eos_id) == (263, 262)  # 256 bytes + 6 merges, then <|endoftext|>
    ids = tokenizer.encode_ordinary("the fox")
    # GPT-2's pattern splits "the", " fox"; the merges give "the" = 258 and " f" + "ox" = 261, 260
    assert ids.tolist() == [258, 261, 260]
    assert tokenizer.decode(tokenizer.encode("the fox").tolist()) == "the fox<|endoftext|>"
    assert [a.tolist() for a in tokenizer.encode_batch(["the", "ox"])] == [[258, 262], [260, 262]]


def test_hf_tokenizer_file_round_trips_and_ends_documents_with_eos(tmp_path):
    tokenizer = HFTokenizer(name="tiny", path=str(hf_tokenizer_file(tmp_path / "tokenizer.json")), eos="</s>")
    text = sentences(1, seed=5)[0]
    ids = tokenizer.encode(text)
    assert ids[-1] == tokenizer.eos_id == 1 and ids.dtype == np.int64
    assert tokenizer.decode(ids[:-1].tolist()) == text
    assert [a.tolist() for a in tokenizer.encode_batch([text])] == [ids.tolist()]
    assert 0 < ids.max() < tokenizer.vocab_size <= 300


def test_identity_follows_the_vocabulary_not_the_file_name(tmp_path):
    a = TiktokenTokenizer("gpt2", str(tiktoken_bpe_file(tmp_path / "a.tiktoken")))
    b = TiktokenTokenizer("r50k_base", str(tiktoken_bpe_file(tmp_path / "b.tiktoken")))
    c = TiktokenTokenizer("gpt2", str(tiktoken_bpe_file(tmp_path / "c.tiktoken", merges=(b"th", b"he"))))
    assert same_tokenizer(a.identity(), b.identity())
    assert not same_tokenizer(a.identity(), c.identity())
    hf = HFTokenizer(path=str(hf_tokenizer_file(tmp_path / "t.json")))
    again = HFTokenizer(path=str(hf_tokenizer_file(tmp_path / "t2.json")))  # trained again: the same vocabulary
    assert same_tokenizer(hf.identity(), again.identity())
    assert not same_tokenizer(hf.identity(), ByteTokenizer().identity())
    assert "bytes (bytes, vocabulary 257" in describe(ByteTokenizer().identity())


def test_bad_tokenizer_files_are_one_clear_error(tmp_path):
    with pytest.raises(InputError, match=r"data.tokenizer.path='.*missing.tiktoken' is not a file"):
        TiktokenTokenizer("gpt2", str(tmp_path / "missing.tiktoken"))
    garbage = tmp_path / "garbage.json"
    garbage.write_text("not json at all")
    with pytest.raises(InputError, match="is not a tokenizers tokenizer.json"):
        HFTokenizer(path=str(garbage))
    with pytest.raises(InputError, match="is not a tiktoken BPE file"):
        TiktokenTokenizer("gpt2", str(garbage))
    with pytest.raises(InputError, match="local BPE file takes GPT-2's rules"):
        TiktokenTokenizer("cl100k_base", str(tiktoken_bpe_file(tmp_path / "x.tiktoken")))
    with pytest.raises(InputError, match="data.tokenizer.eos='<eos>' is not a token"):
        HFTokenizer(path=str(hf_tokenizer_file(tmp_path / "t.json")), eos="<eos>")
    with pytest.raises(InputError, match="not a tiktoken encoding: choose one of .*gpt2"):
        TiktokenTokenizer("gpt-7")


@pytest.mark.slow  # about 25 s inside the tokenizer libraries before they give up
def test_named_encodings_offline_and_uncached_say_what_to_do(tmp_path, monkeypatch):
    """Mocks nothing: with an empty cache and the hubs unreachable, loading by name fails with the way out."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # nothing listens: no request leaves this machine
    with pytest.raises(InputError, match="without internet, set data.tokenizer.path to a local .tiktoken file"):
        TiktokenTokenizer("gpt2")
    with pytest.raises(InputError, match="without internet, set data.tokenizer.path to a local tokenizer.json"):
        HFTokenizer(name="google-t5/t5-base")


def test_every_tokenizer_choice_composes_and_a_local_file_must_be_named():
    from tests.conftest import compose_config
    from research_optim.config_checks import ConfigError, validate

    for choice in ("bytes", "gpt2", "t5", "hf_file"):
        assert "_target_" in compose_config(["data=tinystories", f"data/tokenizer={choice}"]).data.tokenizer
    with pytest.raises(ConfigError, match=r"data.tokenizer.path is not set \(\?\?\?\): pass data.tokenizer.path="):
        validate(compose_config(["data=tinystories", "data/tokenizer=hf_file", "model=gpt"]))
