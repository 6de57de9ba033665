"""How fast a run trains and how much memory it holds: examples/s, tokens/s, MFU and peak memory.

These are measurements of the machine, not of the optimisation: two runs of one config agree on everything in
metrics.jsonl except the keys in ``MEASURED_KEYS``.

MFU (model FLOPs utilisation, PaLM's definition) = the model's training FLOPs per example × examples/s ÷ (the
peak FLOP/s of one device × the number of devices). A model states its FLOPs by defining
``train_flops_per_example() -> float`` — forward + backward of one example, e.g. ≈ 6·N·T + 12·L·d·T² for a
decoder LM (``models.gpt.GPT``); a model without it gets no MFU. Extra forward passes that an optimizer makes
(line searches) count as time but not as model FLOPs, so they lower MFU. The peak is ``train.peak_tflops``, or
looked up by the device's name for the run's precision (dense tensor-core bf16; non-tensor fp32 — torch does not
use TF32 for float32 matmuls by default); on a CPU or an unknown GPU there is no MFU unless the key is set.
"""
from __future__ import annotations

import resource
import sys

import torch
from torch import nn

MEASURED_KEYS = ("train_time", "eval_time", "examples_per_s", "tokens_per_s", "mfu", "peak_memory_gib")

# Dense peak TFLOP/s per GPU from NVIDIA's datasheets: (bf16 tensor core, fp32). Checked in order: the first name
# contained in torch.cuda.get_device_name() wins (so "H100 PCIe" before "H100").
PEAK_TFLOPS: tuple[tuple[str, float, float], ...] = (
    ("H200", 989.0, 67.0),
    ("H100 PCIe", 756.0, 51.0),
    ("H100 NVL", 835.0, 60.0),
    ("H100", 989.0, 67.0),
    ("A100", 312.0, 19.5),
    ("L4", 121.0, 30.3),
)


def known_peak_tflops(device_name: str, precision: str) -> float | None:
    """The table's peak for a device name at ``precision`` ("bf16" | "fp32"), or None for an unknown device."""
    for name, bf16, fp32 in PEAK_TFLOPS:
        if name in device_name:
            return bf16 if precision == "bf16" else fp32
    return None


def peak_tflops(device: torch.device, precision: str, configured: float | None) -> float | None:
    """``configured`` (``train.peak_tflops``) when set; else the table's figure for this CUDA device; else None."""
    if configured is not None:
        return float(configured)
    if device.type != "cuda":
        return None
    return known_peak_tflops(torch.cuda.get_device_name(device), precision)


def train_flops_per_example(model: nn.Module) -> float | None:
    """The model's own count (``train_flops_per_example()``), or None when it does not define one."""
    count = getattr(model, "train_flops_per_example", None)
    return float(count()) if callable(count) else None


def peak_memory_gib(device: torch.device) -> float:
    """This process's peak memory so far: on CUDA the most that torch's tensors held on the device
    (``max_memory_allocated``), on a CPU the peak resident set size of the process (``ru_maxrss``)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**30 if sys.platform == "darwin" else peak / 2**20  # bytes on macOS, KiB on Linux


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a clock read afterwards counts it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rates(examples: int, seconds: float, tokens_per_example: int, flops_per_example: float | None,
          peak: float | None, devices: int) -> dict[str, float]:
    """examples/s, tokens/s (token tasks) and MFU (when the FLOPs and the peak are known) of ``examples``
    trained in ``seconds`` on ``devices`` devices."""
    if seconds <= 0:
        return {}
    out = {"examples_per_s": examples / seconds}
    if tokens_per_example:
        out["tokens_per_s"] = examples * tokens_per_example / seconds
    if flops_per_example is not None and peak is not None:
        out["mfu"] = flops_per_example * out["examples_per_s"] / (peak * 1e12 * devices)
    return out
