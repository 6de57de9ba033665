"""timm vision models adapt to the data's channels, image size and classes, and refuse non-image data."""
from __future__ import annotations

import pytest
import torch

from research_optim.data.base import DataSpec
from research_optim.models.vision import auto_patch_size, resnet, vit

DIGITS = DataSpec(task="classification", input_shape=(1, 8, 8), num_classes=10)
CIFAR = DataSpec(task="classification", input_shape=(3, 32, 32), num_classes=10)
TEXT = DataSpec(task="lm", input_shape=(16,), num_classes=257)


def _forward_backward(model: torch.nn.Module, spec: DataSpec, batch: int = 4) -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.randn(batch, *spec.input_shape)
    y = torch.randint(0, spec.num_classes, (batch,))
    logits = model(x)
    assert logits.shape == (batch, spec.num_classes)
    torch.nn.functional.cross_entropy(logits, y).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    return logits


@pytest.mark.parametrize(("size", "expected"), [(8, 2), (32, 4), (28, 2), (224, 16), (64, 8), (7, 1)])
def test_auto_patch_size(size, expected):
    assert auto_patch_size(size, size) == expected


def test_vit_tiny_on_digits_uses_auto_patch():
    model = vit(DIGITS, arch="vit_t")
    assert model.patch_embed.proj.kernel_size == (2, 2)
    assert model.patch_embed.proj.in_channels == 1
    assert model.pos_embed.shape[1] == 1 + 4 * 4  # class token + 4×4 patches
    _forward_backward(model, DIGITS)


def test_vit_tiny_on_cifar_shape_with_explicit_patch():
    model = vit(CIFAR, arch="vit_t", patch_size=8, drop_rate=0.1, global_pool="avg")
    assert model.pos_embed.shape[1] == 1 + 4 * 4
    _forward_backward(model, CIFAR, batch=2)


@pytest.mark.slow  # 86M parameters
def test_vit_base_builds_on_digits():
    model = vit(DIGITS, arch="vit_b")
    assert model.embed_dim == 768 and len(model.blocks) == 12
    with torch.no_grad():
        assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_vit_patch_that_does_not_divide_names_the_key():
    with pytest.raises(ValueError, match="model.patch_size=3 must divide the image size 8×8"):
        vit(DIGITS, arch="vit_t", patch_size=3)


def test_vit_unknown_arch():
    with pytest.raises(ValueError, match="model.arch"):
        vit(DIGITS, arch="vit_h")


@pytest.mark.parametrize("spec", [DIGITS, CIFAR], ids=["8x8", "32x32"])
def test_resnet18_small_stem_keeps_resolution(spec):
    model = resnet(spec)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)
    # the small stem keeps the full image for the first stage: 8×8 → 64 channels at 8×8
    stem_out = model.act1(model.bn1(model.conv1(torch.randn(1, *spec.input_shape))))
    assert stem_out.shape[-2:] == spec.input_shape[-2:]
    _forward_backward(model, spec, batch=2)


def test_resnet18_imagenet_stem_on_request():
    model = resnet(DIGITS, stem="imagenet")
    assert model.conv1.kernel_size == (7, 7)
    _forward_backward(model, DIGITS, batch=2)


@pytest.mark.parametrize("build", [lambda s: vit(s, arch="vit_t"), resnet], ids=["vit_t", "resnet18"])
def test_vision_models_refuse_text(build):
    with pytest.raises(ValueError, match="needs image classification data.*got data of kind 'text'"):
        build(TEXT)


def test_vision_models_refuse_vectors():
    with pytest.raises(ValueError, match="got data of kind 'vector'"):
        resnet(DataSpec(task="classification", input_shape=(64,), num_classes=10))
