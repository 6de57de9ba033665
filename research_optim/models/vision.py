"""Image classifiers from timm, adapted to the data's channels, image size and number of classes.

An optimizer study trains from scratch; ``model.pretrained`` loads local weights for fine-tuning
(``models/pretrained.py``: the classifier is replaced when the classes differ). ImageNet architectures assume
224×224 inputs, so each builder adapts the input end to small images (8×8 digits, 32×32 CIFAR) instead of
resizing the data.
"""
from __future__ import annotations

from typing import Literal

from torch import nn

from research_optim.data.base import DataSpec

# ViT-B/16 at 224×224 has a 14×14 token grid; the automatic patch size never makes the grid larger than that.
MAX_VIT_TOKENS = 14 * 14

VIT_ARCHITECTURES = {
    "vit_t": "vit_tiny_patch16_224",
    "vit_s": "vit_small_patch16_224",
    "vit_b": "vit_base_patch16_224",
}


def _image_shape(spec: DataSpec, model_name: str) -> tuple[int, int, int]:
    """(channels, height, width) of the data, or a ValueError naming the model and the data's kind."""
    if spec.task != "classification" or spec.kind != "image":
        raise ValueError(
            f"model={model_name} needs image classification data (channels, height, width), "
            f"got data of kind {spec.kind!r} (task {spec.task!r}, input_shape {spec.input_shape})"
        )
    channels, height, width = spec.input_shape
    return channels, height, width


def auto_patch_size(height: int, width: int) -> int:
    """The smallest patch ≥ 2 dividing both sides with at most 14×14 tokens: 8×8 → 2, 32×32 → 4, 224×224 → 16.

    Falls back to 1 when no patch ≥ 2 divides both sides and leaves at least a 2×2 grid (e.g. a prime side).
    """
    for patch in range(2, min(height, width) // 2 + 1):
        if height % patch == 0 and width % patch == 0 and (height // patch) * (width // patch) <= MAX_VIT_TOKENS:
            return patch
    return 1


def vit(
    spec: DataSpec,
    arch: str = "vit_t",
    patch_size: int | None = None,
    drop_rate: float = 0.0,
    attn_drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    global_pool: str = "token",
) -> nn.Module:
    """A Vision Transformer (timm) at the data's image size; ``patch_size=None`` picks :func:`auto_patch_size`."""
    if arch not in VIT_ARCHITECTURES:
        raise ValueError(f"model.arch must be one of {sorted(VIT_ARCHITECTURES)}, got {arch!r}")
    channels, height, width = _image_shape(spec, arch)
    if patch_size is None:
        patch_size = auto_patch_size(height, width)
    elif patch_size < 1 or height % patch_size or width % patch_size:
        raise ValueError(
            f"model.patch_size={patch_size} must divide the image size {height}×{width}; "
            f"set model.patch_size=null to choose one automatically (here {auto_patch_size(height, width)})"
        )
    import timm

    return timm.create_model(
        VIT_ARCHITECTURES[arch],
        pretrained=False,
        num_classes=spec.num_classes,
        in_chans=channels,
        img_size=(height, width),
        patch_size=patch_size,
        drop_rate=drop_rate,
        attn_drop_rate=attn_drop_rate,
        drop_path_rate=drop_path_rate,
        global_pool=global_pool,
    )


def resnet(
    spec: DataSpec,
    arch: str = "resnet18",
    stem: Literal["auto", "imagenet", "small"] = "auto",
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
) -> nn.Module:
    """A timm ResNet; on small images (``stem='small'``, or 'auto' below 64 px) a CIFAR-style stem.

    The ImageNet stem (7×7 stride-2 conv + stride-2 max-pool) shrinks a 32×32 image to 8×8 before the first
    block and an 8×8 one to 2×2, which wastes most of the network; the CIFAR ResNets of He et al. (2016) use a
    3×3 stride-1 conv and no pooling instead. timm has no such stem option, so it is swapped in after creation.
    """
    if stem not in ("auto", "imagenet", "small"):
        raise ValueError(f"model.stem must be 'auto', 'imagenet' or 'small', got {stem!r}")
    channels, height, width = _image_shape(spec, arch)
    import timm

    model = timm.create_model(
        arch,
        pretrained=False,
        num_classes=spec.num_classes,
        in_chans=channels,
        drop_rate=drop_rate,
        drop_path_rate=drop_path_rate,
    )
    if stem == "small" or (stem == "auto" and min(height, width) < 64):
        stem_conv = model.conv1
        if not isinstance(stem_conv, nn.Conv2d):
            raise ValueError(f"model.stem='small' needs a single-conv stem; {arch} has {type(stem_conv).__name__}")
        model.conv1 = nn.Conv2d(channels, stem_conv.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        # Same initialisation timm gives its own convolutions.
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        model.maxpool = nn.Identity()
    return model
