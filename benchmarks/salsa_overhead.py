"""SaLSA's cost over Adam without a line search, and where it goes: forwards per step, cadence, time ratios.

    taskset -c 0 env OMP_NUM_THREADS=1 python -m benchmarks.salsa_overhead   # both tasks: the documented figures
    python -m benchmarks.salsa_overhead --tasks default --overrides train.steps=500 --repeats 3

Tasks: ``default`` (the default experiment: MLP on digits, 3000 steps) and ``transformer`` (``experiment=
lm_synthetic``: a 2-layer GPT, 800 steps). Each task builds SaLSA and the two Adams (the library's per-tensor
``AdamW`` and torch's ``AdamW``, weight decay 0) from the experiment's config, on the same initial model and the
same batches, and trains them side by side: ``--block`` steps of one, then of the next, round-robin, through the
training loop's own step function (``protocols.optimizer_step``: loss, backward, clip, the closure handover, step)
and the lr schedule. Logging, evaluation and checkpoints — the same for every optimizer — are left out. Each block
is timed by the wall clock and by the thread's CPU time (which a shared machine's other processes inflate far
less); the ratios are medians over the blocks of all repeats.

The breakdown: a forward-only evaluation of the batch (a line-search trial) is timed in the same round-robin, so
``(forwards per step − 1) × forward ÷ Adam step`` is the cost of the extra forwards alone and the rest of SaLSA's
ratio is its own work (the line search's bookkeeping, and its speed-up steps' arithmetic: salsa-optimizer's
order, 14 elementwise passes against AdamW's 9). The ``at cap`` rows keep the blocks whose every step had SaLSA's
cadence L at ``cadence_cap`` (one search every 10 steps by default): the paper's ≈3% assumes that regime.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
import torch

from benchmarks.common import compose, print_table
from research_optim import protocols
from research_optim.batch_loss import BatchLoss, loss_and_correct
from research_optim.build import build_data, build_lr_schedule, build_model, build_optimizer
from research_optim.train import seed_everything

TASKS = {"default": [], "transformer": ["experiment=lm_synthetic"]}
OPTIMIZERS = {
    "salsa": ["optimizer=salsa"],
    "adamw (ours)": ["optimizer=lib_adamw", "optimizer.weight_decay=0.0"],
    "adamw (torch)": ["optimizer=adamw", "optimizer.weight_decay=0.0"],
}


class Training:
    """One optimizer's training run, advanced a block of steps at a time; records SaLSA's cadence per step."""

    def __init__(self, overrides: list[str]) -> None:
        cfg = compose(overrides)
        self.t = cfg.train
        seed_everything(cfg.seed)
        dataset = build_data(cfg.data)
        self.model = build_model(cfg.model, dataset)
        steps_per_epoch = max(1, len(dataset.train) // self.t.batch_size)
        self.optimizer = build_optimizer(cfg.optimizer, self.model, self.t.weight_decay_norm_and_bias,
                                         steps_per_epoch)
        self.schedule = build_lr_schedule(cfg.schedule, self.optimizer, self.t.steps)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.batches = dataset.train.train_batches(self.t.batch_size, seed=cfg.seed, start_step=0, rank=0,
                                                   world_size=1)
        torch.manual_seed(cfg.seed * 1_000_003)  # the loop's dropout stream (rank 0)
        self.at_cap = 0  # steps of the last block whose cadence had reached its cap (SaLSA)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return loss_and_correct(self.model(x), y)[0]

    def run(self, steps: int) -> None:
        cap, self.at_cap = getattr(self.optimizer, "cadence_cap", None), 0
        for _ in range(steps):
            x, y = next(self.batches)
            if cap is not None:
                self.at_cap += self.optimizer.cadence() >= cap
            loss, _ = protocols.optimizer_step(self.optimizer, BatchLoss(self.loss, x, y), self.params,
                                               self.t.grad_clip)
            self.schedule.step()
        float(loss)  # the block's work is done before its clock stops

    def forward_only(self, evaluations: int) -> None:
        """Line-search trials' work: forward passes without gradient on fresh batches."""
        for _ in range(evaluations):
            x, y = next(self.batches)
            loss = BatchLoss(self.loss, x, y)(False)
        float(loss)


def measure(task: str, overrides: list[str], repeats: int, block: int) -> list[list[object]]:
    """Rows of the table for ``task``: all blocks, and the blocks whose every step had SaLSA's cadence at its cap."""
    times: dict[tuple[str, str], list[float]] = {}  # (clock, optimizer or "forward") → seconds per step, per block
    forwards, capped = [], []  # per block: SaLSA's forwards per step, whether every step was at the cadence cap
    for _ in range(repeats):
        runs = {name: Training([*choice, *TASKS[task], *overrides]) for name, choice in OPTIMIZERS.items()}
        probe = Training(["optimizer=lib_adamw", *TASKS[task], *overrides])
        salsa = runs["salsa"]
        salsa.optimizer.diagnostics()  # start the forwards-per-step count
        steps = salsa.t.steps
        for start in range(0, steps - block + 1, block):
            for name, training in [*runs.items(), ("forward", None)]:
                run = probe.forward_only if training is None else training.run
                wall, cpu = time.perf_counter(), time.thread_time()
                run(block)
                times.setdefault(("wall", name), []).append((time.perf_counter() - wall) / block)
                times.setdefault(("cpu", name), []).append((time.thread_time() - cpu) / block)
            forwards.append(salsa.optimizer.diagnostics()["forwards_per_step"])
            capped.append(salsa.at_cap == block)
    rows = []
    for selection, keep in (("all", [True] * len(capped)), ("at cap", capped)):
        if not any(keep):
            rows.append([task, selection, "-", "0 blocks: the cadence never stayed at its cap for a whole block",
                         *["-"] * 6])
            continue
        fps = statistics.mean(f for f, k in zip(forwards, keep) if k)
        for clock in ("wall", "cpu"):
            per_block = {name: [t for t, k in zip(times[(clock, name)], keep) if k]
                         for name in [*OPTIMIZERS, "forward"]}
            ratio = {name: statistics.median(a / b for a, b in zip(per_block["salsa"], per_block[name]))
                     for name in OPTIMIZERS}
            forward_share = statistics.median(f / a for f, a in zip(per_block["forward"],
                                                                    per_block["adamw (ours)"]))
            extra_forwards = (fps - 1.0) * forward_share
            rows.append([task, selection, clock, f"{sum(keep)} × {block}", f"{fps:.3f}",
                         f"{ratio['adamw (ours)']:.3f}", f"{ratio['adamw (torch)']:.3f}", f"{forward_share:.3f}",
                         f"{1.0 + extra_forwards:.3f}", f"{ratio['adamw (ours)'] - extra_forwards:.3f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=list(TASKS))
    parser.add_argument("--overrides", nargs="*", default=[], help="extra config overrides for every run")
    parser.add_argument("--repeats", type=int, default=1, help="training runs per optimizer and task")
    parser.add_argument("--block", type=int, default=20, help="steps per timed block (round-robin unit)")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    load_before = os.getloadavg()
    rows = [row for task in args.tasks for row in measure(task, args.overrides, args.repeats, args.block)]
    load_after = os.getloadavg()
    print(f"overrides: {args.overrides or '(none)'}; {args.repeats} run(s) per optimizer and task, blocks of {args.block} steps, {torch.get_num_threads()} "
          f"thread(s); load average (1, 5, 15 min) {' '.join(f'{v:.1f}' for v in load_before)} before, "
          f"{' '.join(f'{v:.1f}' for v in load_after)} after\n")
    print_table(["task", "blocks", "clock", "blocks × steps", "forwards/step", "salsa ÷ adamw (ours)",
                 "salsa ÷ adamw (torch)", "forward ÷ adamw step", "extra forwards alone",
                 "salsa ÷ adamw (ours) less the extra forwards"], rows)


if __name__ == "__main__":
    main()
