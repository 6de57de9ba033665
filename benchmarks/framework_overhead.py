"""Framework overhead: ``research_optim``'s training loop vs a bare hand-written loop, same model, data, optimizer.

    python -m benchmarks.framework_overhead                    # the default experiment (MLP on digits, AdamW)
    python -m benchmarks.framework_overhead --overrides optimizer=lion --repeats 5

The framework's time is the run's ``train_time`` (evaluation and checkpoints excluded, as in metrics.jsonl);
the bare loop builds the same objects with ``research_optim.build`` and runs zero_grad / forward / loss /
backward / clip / step / schedule for the same batches, with no logging and no host sync until the end. Runs
alternate (framework, bare, framework, ...); the table reports medians and throughput ratio (target ≥ 0.97).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from benchmarks.common import compose, print_table, run_experiment
from research_optim.batch_loss import loss_and_correct
from research_optim.build import build_data, build_lr_schedule, build_model, build_optimizer
from research_optim.train import seed_everything


def bare_loop(overrides: list[str]) -> float:
    """Seconds for ``train.steps`` steps of a plain loop over the experiment's own objects."""
    cfg = compose(overrides)
    t = cfg.train
    seed_everything(cfg.seed)
    dataset = build_data(cfg.data)
    model = build_model(cfg.model, dataset)
    steps_per_epoch = max(1, len(dataset.train) // t.batch_size)
    optimizer = build_optimizer(cfg.optimizer, model, t.weight_decay_norm_and_bias, steps_per_epoch)
    schedule = build_lr_schedule(cfg.schedule, optimizer, t.steps)
    if hasattr(optimizer, "train"):
        optimizer.train()
    params = [p for p in model.parameters() if p.requires_grad]
    batches = dataset.train.train_batches(t.batch_size, seed=cfg.seed, start_step=0, rank=0, world_size=1)
    start = time.perf_counter()
    for _ in range(t.steps):
        x, y = next(batches)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_and_correct(model(x), y)[0]
        loss.backward()
        if t.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
        optimizer.step()
        schedule.step()
    float(loss)  # the only host sync
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--overrides", nargs="*", default=[], help="config overrides for both loops")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    framework, bare = [], []
    with tempfile.TemporaryDirectory() as root:
        for _ in range(args.repeats):
            summary, _ = run_experiment(args.overrides, root)
            framework.append(summary["train_time"])
            bare.append(bare_loop(args.overrides))
    steps = compose(args.overrides).train.steps
    f, b = statistics.median(framework), statistics.median(bare)
    print(f"overrides: {args.overrides or '(default experiment)'}; {steps} steps; median of {args.repeats}\n")
    print_table(["loop", "train time s", "steps/s", "throughput ÷ bare"],
                [["bare hand-written loop", f"{b:.2f}", f"{steps / b:.0f}", "1.000"],
                 ["research_optim Trainer", f"{f:.2f}", f"{steps / f:.0f}", f"{b / f:.3f}"]])


if __name__ == "__main__":
    main()
