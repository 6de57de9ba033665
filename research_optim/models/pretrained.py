"""Pretrained weights from a local path (``model.pretrained``), for fine-tuning studies.

The path may name:

* a ``.safetensors`` file;
* a Hugging Face model folder: ``model.safetensors``, a sharded ``model.safetensors.index.json``, or
  ``pytorch_model.bin`` (+ index) — e.g. a ``LlamaForCausalLM`` folder for ``model=llama_*``, whose names these
  models share;
* a torch checkpoint (``.pt``, ``.pth``, ``.bin``): a plain state dict, timm's ``{"state_dict": ...}``, or a run's
  own ``checkpoints/last.pt`` (``{"model": ...}``). Torch checkpoints are unpickled: load only files you trust.

Prefixes of wrapped models (``module.`` from DDP, ``_orig_mod.`` from ``torch.compile``) are dropped. Every tensor
of the model must come from the file with the same shape, except its classifier (a timm model's ``classifier``,
the ``score`` head of a text classifier): a classifier the file lacks, or of another shape (another number of
classes), keeps its fresh initialisation — the usual fine-tuning start. Tensors of the file that the model lacks
(an LM head when fine-tuning a classifier) are left out. The log says both.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import Tensor, nn

from research_optim.errors import InputError

log = logging.getLogger("research_optim")

FOLDER_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
NESTED_KEYS = ("state_dict", "model")  # timm's training checkpoints; this framework's checkpoints


def check_path(path: str) -> Path:
    """The file to read for ``model.pretrained``, or an :class:`InputError` saying what is missing."""
    local = Path(path).expanduser()
    if not local.exists():
        raise InputError(f"model.pretrained={path} does not exist: point it at a local weights file or folder")
    if local.is_dir():
        found = next((local / name for name in FOLDER_FILES if (local / name).is_file()), None)
        if found is None:
            raise InputError(f"model.pretrained={path} is a folder without weights (none of {', '.join(FOLDER_FILES)})")
        return found
    return local


def _read_file(file: Path) -> dict[str, Tensor]:
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(file))
        loaded = torch.load(file, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 — whatever the reader says, the file is not weights
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise InputError(f"model.pretrained: {file} cannot be read as weights ({reason})") from None
    nested = next((key for key in NESTED_KEYS if isinstance(loaded, dict) and isinstance(loaded.get(key), dict)), None)
    state = loaded[nested] if nested else loaded
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise InputError(f"model.pretrained: {file} holds no state dict (a dict of tensors, or one under "
                         f"{' / '.join(NESTED_KEYS)})")
    return state


def read_state_dict(path: str) -> dict[str, Tensor]:
    """Every tensor at ``path`` (all shards of an indexed folder), wrapper prefixes dropped."""
    file = check_path(path)
    if file.name.endswith(".index.json"):
        state: dict[str, Tensor] = {}
        for shard in sorted(set(json.loads(file.read_text())["weight_map"].values())):
            state.update(_read_file(file.parent / shard))
    else:
        state = _read_file(file)
    for prefix in WRAPPER_PREFIXES:
        state = {k.removeprefix(prefix): v for k, v in state.items()}
    return state


def classifier_names(model: nn.Module) -> tuple[str, ...]:
    """The module names of the model's classifier: timm's ``pretrained_cfg['classifier']``, or the model's own
    ``classifier_name`` (the text models' ``score``); none for a language model, whose head is not replaceable."""
    names = getattr(model, "pretrained_cfg", {}).get("classifier") or getattr(model, "classifier_name", None)
    return (names,) if isinstance(names, str) else tuple(names or ())


def load_pretrained(model: nn.Module, path: str) -> None:
    """Load ``path`` into ``model`` (see the module docstring); the first tensor that cannot load is the error."""
    state = read_state_dict(path)
    classifier = classifier_names(model)
    in_classifier = lambda key: any(key == c or key.startswith(c + ".") for c in classifier)  # noqa: E731
    fresh, loaded = [], {}
    for name, tensor in model.state_dict().items():
        theirs = state.get(name)
        if theirs is not None and theirs.shape == tensor.shape:
            loaded[name] = theirs
        elif in_classifier(name):
            fresh.append(name)
        elif theirs is None:
            raise InputError(f"model.pretrained={path} has no tensor {name} (shape {tuple(tensor.shape)}) that "
                             f"the model needs: the weights are of another architecture")
        else:
            raise InputError(f"model.pretrained={path}: tensor {name} has shape {tuple(theirs.shape)} there and "
                             f"{tuple(tensor.shape)} in the model: the weights are of another size (check the "
                             f"model preset, and the data's vocabulary or image channels)")
    model.load_state_dict(loaded, strict=False)
    unused = sorted(set(state) - set(model.state_dict()))
    log.info("loaded %d tensors from %s%s%s", len(loaded), path,
             f"; fresh classifier: {', '.join(fresh)}" if fresh else "",
             f"; not used: {', '.join(unused[:5])}{' ...' if len(unused) > 5 else ''}" if unused else "")
