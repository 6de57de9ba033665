"""LLaMA: equal to Hugging Face's LlamaForCausalLM / ForSequenceClassification with the same weights, causal,
learns; the presets' parameter counts; training FLOPs equal to torch's FLOP counter (GPT too)."""
from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from tests.conftest import compose_config
from tests.models.lm_checks import assert_causal, assert_learns_a_sequence
from research_optim.build import constructor_args, instantiate
from research_optim.data.base import PAD_ID, DataSpec
from research_optim.models.gpt import GPT
from research_optim.models.llama import Llama

LM = DataSpec(task="lm", input_shape=(16,), num_classes=50)
PAIRS = DataSpec(task="classification", input_shape=(16,), num_classes=3, vocab_size=50)
TINY = {"n_layer": 2, "n_head": 4, "n_embd": 32, "intermediate_size": 48}


def tiny_llama(spec: DataSpec = LM, **overrides) -> Llama:
    torch.manual_seed(0)
    return Llama(spec, **{**TINY, **overrides})


def hf_config(**extra):
    transformers = pytest.importorskip("transformers")
    return transformers.LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                    num_attention_heads=4, max_position_embeddings=16, rms_norm_eps=1e-6,
                                    rope_theta=10000.0, tie_word_embeddings=False, **extra)


@pytest.mark.slow  # a long reference comparison
def test_equals_hugging_face_llama_for_causal_lm_loaded_from_its_folder(tmp_path):
    """The reference: transformers' LlamaForCausalLM, saved as a Hugging Face folder, loaded by model.pretrained."""
    from research_optim.models.pretrained import load_pretrained
    from transformers import LlamaForCausalLM

    torch.manual_seed(1)
    reference = LlamaForCausalLM(hf_config()).eval()
    reference.save_pretrained(tmp_path / "hf")
    ours = tiny_llama()
    load_pretrained(ours, str(tmp_path / "hf"))
    tokens = torch.randint(0, 50, (3, 16))
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(tokens), reference(tokens).logits, atol=2e-5, rtol=1e-4)


def test_sequence_classification_equals_hugging_face_on_each_unpadded_sequence(tmp_path):
    from research_optim.models.pretrained import load_pretrained
    from transformers import LlamaForSequenceClassification

    torch.manual_seed(2)
    reference = LlamaForSequenceClassification(hf_config(num_labels=3, pad_token_id=0)).eval()
    reference.save_pretrained(tmp_path / "hf")
    ours = tiny_llama(PAIRS)
    load_pretrained(ours, str(tmp_path / "hf"))
    lengths = [16, 9, 1]
    tokens = torch.randint(1, 50, (3, 16))
    padded = tokens.clone()
    for row, length in enumerate(lengths):
        padded[row, length:] = PAD_ID
    with torch.no_grad():
        logits = ours.eval()(padded)
        for row, length in enumerate(lengths):
            torch.testing.assert_close(logits[row], reference(tokens[row : row + 1, :length]).logits[0],
                                       atol=2e-5, rtol=1e-4)


def test_attention_is_causal_and_the_model_learns():
    assert_causal(tiny_llama())
    assert_learns_a_sequence(tiny_llama())


def test_bad_shapes_and_data_are_refused():
    with pytest.raises(ValueError, match="model=llama needs text data"):
        Llama(DataSpec(task="classification", input_shape=(3, 8, 8), num_classes=10))
    with pytest.raises(ValueError, match="heads of even width"):
        Llama(LM, n_embd=36, n_head=4)
    with pytest.raises(ValueError, match="exceeds the model's context 16"):
        tiny_llama()(torch.zeros(1, 17, dtype=torch.long))


def preset_parameters(preset: str, vocab_size: int, seq_len: int) -> int:
    node = constructor_args(compose_config([f"model={preset}"]).model)
    node.pop("pretrained")
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = instantiate(node)(DataSpec(task="lm", input_shape=(seq_len,), num_classes=vocab_size))
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("preset, layers, width, mlp, nominal", [
    ("llama_60m", 8, 512, 1376, 60e6), ("llama_130m", 12, 768, 2048, 130e6), ("llama_350m", 24, 1024, 2736, 350e6)])
def test_llama_presets_have_the_papers_sizes(preset, layers, width, mlp, nominal):
    """GaLore/Cautious sizes with T5's 32000-id vocabulary: embedding + head + L·(4d² + 3·d·f + 2d) + d."""
    vocab = 32000
    expected = 2 * vocab * width + layers * (4 * width**2 + 3 * width * mlp + 2 * width) + width
    assert preset_parameters(preset, vocab, 256) == expected
    assert abs(expected / nominal - 1) < 0.06


def test_gpt2_small_preset_has_gpt2s_124m_parameters():
    assert preset_parameters("gpt2_small", 50257, 1024) == 124_439_808  # GPT-2 small, tied embeddings


@pytest.mark.parametrize("spec", [LM, PAIRS], ids=["lm", "classification"])
@pytest.mark.parametrize("build", [tiny_llama, lambda spec: GPT(spec, n_layer=2, n_head=4, n_embd=32)],
                         ids=["llama", "gpt"])
def test_training_flops_equal_torchs_flop_counter(build, spec):
    """Forward + backward of a batch, counted by torch (attention through the math kernel, which it can count)."""
    model = build(spec)
    tokens = torch.randint(0, 50, (2, 16))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(tokens).float().sum().backward()
    assert counter.get_total_flops() / 2 == model.train_flops_per_example()
