"""Pretrained weights from local files the tests write: safetensors, sharded folders, timm and run checkpoints;
the classifier replaced for other classes; a checkpoint of another shape is one error naming the tensor."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from research_optim.data.base import DataSpec
from research_optim.errors import InputError
from research_optim.models.gpt import GPT
from research_optim.models.llama import Llama
from research_optim.models.pretrained import load_pretrained
from research_optim.models.vision import resnet

LM = DataSpec(task="lm", input_shape=(16,), num_classes=50)
PAIRS = DataSpec(task="classification", input_shape=(16,), num_classes=2, vocab_size=50)
TINY = {"n_layer": 2, "n_head": 2, "n_embd": 32, "intermediate_size": 48}


def llama(spec: DataSpec = LM, seed: int = 0, **overrides) -> Llama:
    torch.manual_seed(seed)
    return Llama(spec, **{**TINY, **overrides})


def assert_same_tensors(a: dict, b: dict, keys) -> None:
    for key in keys:
        assert torch.equal(a[key], b[key]), key


def test_safetensors_file_round_trip(tmp_path):
    trained = llama(seed=1)
    save_file(trained.state_dict(), tmp_path / "weights.safetensors")
    fresh = llama(seed=2)
    load_pretrained(fresh, str(tmp_path / "weights.safetensors"))
    assert_same_tensors(fresh.state_dict(), trained.state_dict(), trained.state_dict())


def test_sharded_hugging_face_folder(tmp_path):
    state = llama(seed=1).state_dict()
    names = list(state)
    halves = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2 :]}
    for file, keys in halves.items():
        save_file({k: state[k] for k in keys}, tmp_path / file)
    weight_map = {k: file for file, keys in halves.items() for k in keys}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    fresh = llama(seed=2)
    load_pretrained(fresh, str(tmp_path))
    assert_same_tensors(fresh.state_dict(), state, names)


def test_timm_checkpoint_with_another_number_of_classes_keeps_a_fresh_classifier(tmp_path):
    """A timm training checkpoint ({'state_dict': ...}, saved from a DDP model: 'module.' names), 10 → 4 classes."""
    torch.manual_seed(1)
    source = resnet(DataSpec(task="classification", input_shape=(3, 32, 32), num_classes=10))
    torch.save({"epoch": 3, "arch": "resnet18",
                "state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "ckpt.pth")
    torch.manual_seed(2)
    target = resnet(DataSpec(task="classification", input_shape=(3, 32, 32), num_classes=4))
    initial_fc = target.fc.weight.detach().clone()
    load_pretrained(target, str(tmp_path / "ckpt.pth"))
    body = [k for k in source.state_dict() if not k.startswith("fc.")]
    assert_same_tensors(target.state_dict(), source.state_dict(), body)
    assert torch.equal(target.fc.weight, initial_fc)


def test_language_model_weights_start_a_text_classifier(tmp_path):
    """An LM checkpoint fine-tunes a classifier: the body loads, lm_head is left out, score starts fresh."""
    lm = llama(seed=1)
    torch.save({"model": lm.state_dict(), "optimizer": {}, "state": {"step": 10}}, tmp_path / "last.pt")  # a run's
    classifier = llama(PAIRS, seed=2)
    initial_score = classifier.score.weight.detach().clone()
    load_pretrained(classifier, str(tmp_path / "last.pt"))
    body = [k for k in lm.state_dict() if k.startswith("model.")]
    assert_same_tensors(classifier.state_dict(), lm.state_dict(), body)
    assert torch.equal(classifier.score.weight, initial_score)


def test_a_checkpoint_of_another_size_names_the_first_mismatched_tensor(tmp_path):
    save_file(llama(n_embd=32).state_dict(), tmp_path / "small.safetensors")
    with pytest.raises(InputError, match=r"tensor model.embed_tokens.weight has shape \(50, 32\) there and "
                                         r"\(50, 64\) in the model"):
        load_pretrained(llama(n_embd=64), str(tmp_path / "small.safetensors"))
    save_file({k: v for k, v in llama().state_dict().items() if "layers.1." not in k}, tmp_path / "short.safetensors")
    with pytest.raises(InputError, match=r"has no tensor model.layers.1.input_layernorm.weight \(shape \(32,\)\)"):
        load_pretrained(llama(), str(tmp_path / "short.safetensors"))
    gpt = GPT(LM, n_layer=1, n_head=2, n_embd=32)  # an LM's head is not a replaceable classifier
    save_file({k: v for k, v in gpt.state_dict().items() if k != "head.weight" and k != "tok_emb.weight"},
              tmp_path / "headless.safetensors")
    with pytest.raises(InputError, match="has no tensor tok_emb.weight"):
        load_pretrained(gpt, str(tmp_path / "headless.safetensors"))


def test_paths_that_hold_no_weights_are_one_clear_error(tmp_path):
    with pytest.raises(InputError, match="model.pretrained=.*nowhere does not exist"):
        load_pretrained(llama(), str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="is a folder without weights .none of model.safetensors"):
        load_pretrained(llama(), str(tmp_path / "empty"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="junk.pt cannot be read as weights"):
        load_pretrained(llama(), str(tmp_path / "junk.pt"))
    torch.save({"epoch": 1, "notes": "no tensors"}, tmp_path / "meta.pt")
    with pytest.raises(InputError, match="meta.pt holds no state dict"):
        load_pretrained(llama(), str(tmp_path / "meta.pt"))
