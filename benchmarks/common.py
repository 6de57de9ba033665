"""Shared by the benchmarks: parameter sets, side-by-side timing (medians), copy bandwidth and table printing.

Timings are never asserted: the scripts print tables. Ratios are taken between optimizers timed in the same
round-robin loop (one step of each in turn, repeated), so machine noise hits all of them alike.
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Sequence

import torch

Shapes = list[tuple[int, ...]]


def vit_s_shapes() -> Shapes:
    """ViT-S/16 (timm ``vit_small_patch16_224``): 22.1M parameters in 152 tensors."""
    import timm

    with torch.device("meta"):
        model = timm.create_model("vit_small_patch16_224")
    return [tuple(p.shape) for p in model.parameters()]


def gpt_shapes(n_layer: int = 6, n_embd: int = 512, vocab: int = 32000, context: int = 512) -> Shapes:
    """A GPT-2-style decoder (no biases, tied embedding): per block 2 LayerNorms, qkv, attn proj, MLP in/out."""
    shapes: Shapes = [(vocab, n_embd), (context, n_embd)]
    for _ in range(n_layer):
        shapes += [(n_embd,), (3 * n_embd, n_embd), (n_embd, n_embd), (n_embd,), (4 * n_embd, n_embd),
                   (n_embd, 4 * n_embd)]
    return shapes + [(n_embd,)]


def smoke_shapes() -> Shapes:
    """A few small tensors: checks that every row of a benchmark runs, in seconds."""
    return [(64, 32), (32,), (16, 3, 3, 3)]


def train_mode(cls: type, **kw) -> Callable[..., torch.optim.Optimizer]:
    """``(params, implementation) -> optimizer`` for a Schedule-Free class, switched to train mode (it starts in
    eval mode, as in the package)."""
    def build(params, implementation: str) -> torch.optim.Optimizer:
        optimizer = cls(params, implementation=implementation, **kw)
        optimizer.train()
        return optimizer
    return build


PARAM_SETS: dict[str, Callable[[], Shapes]] = {"vit_s": vit_s_shapes, "gpt": gpt_shapes, "smoke": smoke_shapes}


def make_params(shapes: Shapes, device: torch.device, dtype: torch.dtype = torch.float32,
                seed: int = 0) -> list[torch.nn.Parameter]:
    """Parameters with a fixed random gradient each (the step's cost does not depend on the values)."""
    gen = torch.Generator().manual_seed(seed)
    params = []
    for shape in shapes:
        p = torch.nn.Parameter(torch.randn(shape, generator=gen).mul_(0.02).to(device, dtype))
        p.grad = torch.randn(shape, generator=gen).to(device, dtype)
        params.append(p)
    return params


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_round_robin(steps: dict[str, Callable[[], object]], device: torch.device, repeats: int,
                     warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each callable, calling them in turn ``repeats`` times (after ``warmup``)."""
    for _ in range(warmup):
        for fn in steps.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, fn in steps.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def build_rotated(builders: dict[str, Callable[[], Any]], round_index: int) -> dict[str, Any]:
    """Every builder called once, starting at the ``round_index``-th (mod their number) and wrapping around: on a CPU
    the set of tensors allocated first steps a few percent slower than sets allocated after it (three fused AdamW
    measured against each other: 3–7%), so a benchmark that compares steps builds them anew each round in a rotated
    order instead of once."""
    names = list(builders)
    start = round_index % len(names)
    built = {name: builders[name]() for name in names[start:] + names[:start]}
    return {name: built[name] for name in names}


def copy_bandwidth(device: torch.device, numel: int = 1 << 25, repeats: int = 20) -> float:
    """Measured bytes/s of ``dst.copy_(src)`` (read + write) on float32 buffers, median over repeats."""
    src = torch.randn(numel, device=device)
    dst = torch.empty_like(src)
    seconds = time_round_robin({"copy": lambda: dst.copy_(src)}, device, repeats)["copy"]
    return 2 * 4 * numel / seconds


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A GitHub-markdown table (pasted as is into benchmarks/README.md)."""
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join("---" for _ in headers) + "|", flush=True)
    for row in rows:
        print_row(row)


def print_row(row: Sequence[object]) -> None:
    print("| " + " | ".join(_fmt(v) for v in row) + " |", flush=True)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def machine() -> str:
    import platform

    cpu = platform.processor() or platform.machine()
    return (f"{platform.node()} ({cpu}, {torch.get_num_threads()} torch threads), torch {torch.__version__}")


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else machine()


def compose(overrides: Sequence[str]):
    """The project's Hydra config with ``overrides`` (as ``python -m research_optim`` would compose it)."""
    from hydra import compose as hydra_compose, initialize_config_dir

    from research_optim.app import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return hydra_compose(config_name="config", overrides=list(overrides))


def run_experiment(overrides: Sequence[str], root: str) -> tuple[dict, list[dict]]:
    """Train in-process (``research_optim.app.run``) under ``root``; return the summary and the metrics lines."""
    import json
    from pathlib import Path

    from research_optim.app import run

    summary = run(compose([*overrides, f"run.root={root}", "train.progress=false", "run.resume=false"]))
    lines = Path(summary["run_dir"], "metrics.jsonl").read_text().splitlines()
    return summary, [json.loads(line) for line in lines]
