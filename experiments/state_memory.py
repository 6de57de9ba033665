"""Optimizer state bytes of the optimizers the CLI builds, on the studies' models, measured after 3 steps.

    python experiments/state_memory.py --out experiments/lion/state_memory
    python experiments/state_memory.py --optimizers adamw sf_adamw --models mlp gpt

Each optimizer is built from the real config tree (``optimizer=<name>``, the model/data of the task) exactly as
``python -m research_optim`` builds it, stepped 3 times on random gradients, and its state is counted as
``sum(t.numel() * t.element_size())`` over every tensor in ``optimizer.state`` (what a checkpoint stores).
``bytes/param`` divides by the parameter count; AdamW keeps two float32 moments (8 bytes per parameter).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch
from hydra import compose, initialize_config_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from research_optim.app import CONFIG_DIR  # noqa: E402
from research_optim.build import build_data, build_model, build_optimizer  # noqa: E402
from experiments.tools import write  # noqa: E402

# The studies' tasks: the digits MLP and the default-size GPT of the lm_synthetic preset (the CPU-sized one).
TASKS = {"mlp": ["model=mlp", "data=digits"], "gpt": ["experiment=lm_synthetic"]}


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
               if torch.is_tensor(t))


def measure(optimizer_name: str, task: str) -> dict:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose(config_name="config", overrides=[f"optimizer={optimizer_name}", *TASKS[task]])
    torch.manual_seed(0)
    dataset = build_data(cfg.data)
    model = build_model(cfg.model, dataset)
    optimizer = build_optimizer(cfg.optimizer, model, cfg.train.weight_decay_norm_and_bias)
    if hasattr(optimizer, "train"):  # Schedule-Free: step() only in train mode
        optimizer.train()
    params = [p for p in model.parameters() if p.requires_grad]
    for _ in range(3):
        for p in params:
            p.grad = torch.randn_like(p)
        optimizer.step(lambda *args, **kwargs: torch.tensor(1.0)) if getattr(optimizer, "requires_closure", False) \
            else optimizer.step()
    n = sum(p.numel() for p in params)
    size = state_bytes(optimizer)
    return dict(task=task, optimizer=optimizer_name, params=n, state_bytes=size, bytes_per_param=size / n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--optimizers", nargs="+",
                        default=["adamw", "c_adamw", "lion", "c_lion", "sf_adamw", "sgd"])
    parser.add_argument("--models", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--out")
    args = parser.parse_args()
    rows = [measure(o, m) for m in args.models for o in args.optimizers]
    table = pd.DataFrame(rows)
    adamw = table[table.optimizer == "adamw"].set_index("task")["state_bytes"]
    table["vs_adamw"] = table.apply(lambda r: r.state_bytes / adamw.get(r.task, float("nan")), axis=1)
    write(table, args.out)


if __name__ == "__main__":
    main()
