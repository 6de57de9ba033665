"""Optimizer step time, Lion / C-Lion / C-AdamW relative to AdamW, timed round-robin on the same parameters.

    python experiments/lion/step_time.py --out experiments/lion/step_time

Parameters are those of the studies' models built from the real config (digits MLP; the lm_synthetic GPT at its
preset size and at n_embd=256, n_layer=4 — the GPT config's own default — for a larger tensor set). Each
optimizer gets its own copy and fixed random gradients; one round times one ``step()`` of every optimizer in turn,
``--repeats`` rounds after warm-up, and the table gives the median time and the median of per-round ratios to
AdamW (torch's default implementation, foreach). Absolute times on a shared CPU are noise; the ratios are the result.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from hydra import compose, initialize_config_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from research_optim.app import CONFIG_DIR  # noqa: E402
from research_optim.build import build_data, build_model, build_optimizer  # noqa: E402
from experiments.tools import write  # noqa: E402

MODELS = {
    "mlp (85k)": ["model=mlp", "data=digits"],
    "gpt (103k)": ["experiment=lm_synthetic"],
    "gpt n_embd=256 (3.2M)": ["experiment=lm_synthetic", "model.n_embd=256", "model.n_layer=4"],
}
OPTIMIZERS = ("adamw", "lion", "c_adamw", "c_lion")


def build(optimizer: str, overrides: list[str]) -> tuple[torch.optim.Optimizer, list[torch.Tensor]]:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose(config_name="config", overrides=[f"optimizer={optimizer}", *overrides])
    torch.manual_seed(0)
    model = build_model(cfg.model, build_data(cfg.data))
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    return build_optimizer(cfg.optimizer, model, cfg.train.weight_decay_norm_and_bias), params


def time_model(name: str, overrides: list[str], repeats: int) -> list[dict]:
    optimizers = {o: build(o, overrides) for o in OPTIMIZERS}
    for opt, _ in optimizers.values():  # warm-up: state allocation
        for _ in range(3):
            opt.step()
    times: dict[str, list[float]] = {o: [] for o in OPTIMIZERS}
    for _ in range(repeats):
        for o, (opt, _) in optimizers.items():
            start = time.perf_counter()
            opt.step()
            times[o].append(time.perf_counter() - start)
    n = sum(p.numel() for p in optimizers["adamw"][1])
    return [dict(model=name, params=n, optimizer=o, median_ms=1e3 * statistics.median(times[o]),
                 ratio_to_adamw=statistics.median(t / a for t, a in zip(times[o], times["adamw"])))
            for o in OPTIMIZERS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [row for name, overrides in MODELS.items() for row in time_model(name, overrides, args.repeats)]
    write(pd.DataFrame(rows), args.out)


if __name__ == "__main__":
    main()
