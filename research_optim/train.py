"""The training loop, top to bottom: build, resume, train with periodic logs/evals/checkpoints, summarise.

The loop itself syncs with the host at logging, evaluation and checkpoint steps, and at every step with
``train.nonfinite=skip`` (which checks each step). Some optimizers sync inside ``step``: the line searches (SaLSA
on its search steps, SLS and Adam-SLS on every step) and Adafactor (two norms per tensor, as torch's). Everything a
rank writes goes through rank 0 (``Tracker``, checkpoints); the run's life on disk — completed already, the lock,
the checkpoint to resume from, the status it ends with — is ``lifecycle``. Optimizer protocols (plain / closure /
train-eval modes) live in ``protocols``; a step's batch is a ``BatchLoss`` over the rank's micro-batches;
throughput and memory measurements in ``throughput``.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import socket
import time
import warnings
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any, Iterator

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from research_optim import checkpoint, distributed, fsdp, lifecycle, protocols, rng, sharded_checkpoint, throughput
from research_optim.batch_loss import BatchLoss, loss_and_correct
from research_optim.build import build_data, build_lr_schedule, build_model, build_optimizer
from research_optim.data.base import DataSpec
from research_optim.environment import run_environment
from research_optim.errors import UserError
from research_optim.lifecycle import Diverged
from research_optim.optim import cpu_probe
from research_optim.optim.implementation import IMPLEMENTATIONS, compilable, resolve
from research_optim.optim.sharded import is_sharded
from research_optim.preemption import Preempted, StopFlag
from research_optim.run_dir import run_dir, run_id
from research_optim.threads import choose_threads
from research_optim.topology import planned_micro_batches, topology, with_resolved_device
from research_optim.tracking import Tracker

log = logging.getLogger("research_optim")


@dataclasses.dataclass
class TrainState:
    """Everything besides model/optimizer/schedule/RNG that a resumed run needs to continue bit for bit."""

    step: int = 0
    examples: int = 0
    tokens: int = 0
    train_time: float = 0.0
    eval_time: float = 0.0
    window: tuple[float, int] = (0.0, 0)  # (loss sum, count) since the last log line, at the checkpoint
    skipped: int = 0            # steps skipped for a non-finite loss/gradient (train.nonfinite=skip), in all
    skipped_logged: int = 0     # ... of which the log lines so far reported
    consecutive_skips: int = 0  # the current streak; train.max_consecutive_skips ends the run as diverged
    segments: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # each start/resume: step, code, host


class LossWindow:
    """Training losses since the last log line: a device-side sum (no host sync per step) and a count."""

    def __init__(self, total: float, count: int, device: torch.device) -> None:
        self.total = torch.tensor(total, dtype=torch.float64, device=device)
        self.count = count

    def add(self, loss: torch.Tensor) -> None:
        self.total += loss
        self.count += 1

    def state(self) -> tuple[float, int]:
        return self.total.item(), self.count

    def mean_over_ranks(self) -> float:
        """Mean loss over the window's steps on every rank (a host sync, at log steps); then empty it."""
        both = torch.stack([self.total, self.total.new_tensor(float(self.count))])
        total, count = distributed.all_reduce_sum(both).tolist()
        self.total.zero_()
        self.count = 0
        return total / count if count else math.nan


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def setup_logging(directory: Path | None, is_main: bool) -> None:
    """Rank 0 speaks for all: the other ranks log only errors and drop Python warnings (the same as rank 0's)."""
    root = logging.getLogger("research_optim")
    root.setLevel(logging.INFO if is_main else logging.ERROR)
    if not is_main:
        warnings.filterwarnings("ignore")
    for h in list(root.handlers):
        root.removeHandler(h)
    fmt = logging.Formatter("[%(asctime)s %(levelname)s] %(message)s", "%H:%M:%S")
    console = logging.StreamHandler()
    console.setFormatter(fmt)
    root.addHandler(console)
    if directory is not None and is_main:
        file = logging.FileHandler(directory / "run.log")
        file.setFormatter(fmt)
        root.addHandler(file)
    root.propagate = False


class Trainer:
    """One run. ``run()`` returns the final summary (also written to summary.json)."""

    def __init__(self, cfg: DictConfig, env: distributed.Env) -> None:
        cfg = with_resolved_device(cfg)
        if env.device.type != cfg.train.device:
            raise UserError(f"this run was set up for train.device={cfg.train.device} (resolved on the submitting "
                            f"host), but this process on {socket.gethostname()} runs on {env.device.type}; "
                            "launch it where that device exists, or set train.device explicitly (a new run)")
        self.cfg, self.env, t = cfg, env, cfg.train
        setup_logging(None, env.is_main)
        seed_everything(cfg.seed)
        self.dataset = build_data(cfg.data)
        self.spec: DataSpec = self.dataset.spec
        self.model = build_model(cfg.model, self.dataset).to(env.device)
        self.sharded = env.distributed and t.parallel == "fsdp"  # FSDP2; else DDP when distributed
        if self.sharded:
            fsdp.shard(self.model, env.device, env.world_size)  # before the optimizer: its state is sharded too
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.micro_batches = planned_micro_batches(t, env.world_size)
        self.threads, self.threads_reason = choose_threads(t.threads, self.work_per_step())
        torch.set_num_threads(self.threads)
        train_size = len(self.dataset.train) if hasattr(self.dataset.train, "__len__") else None  # streams: None
        steps_per_epoch = max(1, train_size // t.batch_size) if train_size else None
        self.optimizer = build_optimizer(cfg.optimizer, self.model, t.weight_decay_norm_and_bias, steps_per_epoch,
                                         compile=t.compile_optimizer)  # true: allowed (RESEARCH_OPTIM_COMPILE=0 wins)
        if compiles_step(self.optimizer) and env.device.type == "cpu" and not t.compile_model:
            cpu_probe.start()  # the first compile's CPU probe, alongside the setup and the first forward and backward
        self.schedule = build_lr_schedule(cfg.schedule, self.optimizer, t.steps)
        if protocols.has_modes(self.optimizer):
            self.optimizer.train()  # Schedule-Free optimizers start in eval mode, as in the package
        net = torch.compile(self.model) if t.compile_model else self.model  # shares the model's parameters
        self.net: nn.Module = DistributedDataParallel(net) if env.distributed and not self.sharded else net
        if (env.distributed or self.micro_batches > 1) and env.is_main and protocols.has_batch_norm(self.model):
            log.warning("BatchNorm normalises over each micro-batch's %d examples, not the global batch of %d: with "
                        "BatchNorm the result depends on the number of processes and micro-batches",
                        self.examples_per_pass(), t.batch_size)
        # Dropout differs per rank; parameters were initialised identically above (same seed everywhere).
        torch.manual_seed(cfg.seed * 1_000_003 + env.rank)
        self.autocast = (torch.autocast(env.device.type, dtype=torch.bfloat16) if t.precision == "bf16"
                         else nullcontext())
        self.id, self.dir = run_id(cfg), run_dir(cfg)
        self.ckpt_dir = self.dir / "checkpoints"
        self.topology = topology(env.world_size, env.device.type, self.micro_batches, t.parallel)
        self.flops_per_example = throughput.train_flops_per_example(self.model)
        self.peak_tflops = throughput.peak_tflops(env.device, t.precision, t.peak_tflops)
        self.state = TrainState()
        self.saved: tuple[int, Path] | None = None  # the step and file of the newest good checkpoint on disk

    # ------------------------------------------------------------------ helpers
    def compute_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with self.autocast:
            return loss_and_correct(self.net(x), y)[0]

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def tokens_per_example(self) -> int:
        return self.spec.input_shape[0] if self.spec.task == "lm" else 0

    def examples_per_pass(self) -> int:
        """Examples in one forward/backward pass of a rank: its part of the global batch over its micro-batches."""
        return self.cfg.train.batch_size // self.env.world_size // self.micro_batches

    def work_per_step(self) -> int:
        """Parameters × examples per pass (× tokens per example): how much an op computes, for the thread choice."""
        return sum(p.numel() for p in self.params) * self.examples_per_pass() * max(1, self.tokens_per_example())

    def stop_advice(self) -> str:
        """What a diverged run keeps and what to change."""
        t = self.cfg.train
        kept = (f"its last good checkpoint (step {self.saved[0]}) is {self.saved[1]}" if self.saved is not None
                else "no checkpoint was written yet")
        step_size = next((f"optimizer.{k}" for k in ("lr", "init_step_size") if k in self.cfg.optimizer), "the lr")
        fixes = [f"lower {step_size}"] + (["enable train.grad_clip"] if t.grad_clip is None else []) + (
            ["set train.nonfinite=skip to skip such steps"] if t.nonfinite == "stop" else [])
        return f"The run stops; {kept}. To go on: {', or '.join(fixes)}."

    # ------------------------------------------------------------------ checkpoint
    def save_checkpoint(self, window: LossWindow) -> None:
        with protocols.evaluation_mode(self.optimizer):
            if not protocols.state_is_finite(self.optimizer, self.params):  # same answer on every rank (replicas)
                raise Diverged(f"the parameters or optimizer state are non-finite at step {self.state.step}, so "
                               f"they are not checkpointed. {self.stop_advice()}")
            self.state.window = window.state()  # local to each rank; a preemption may land mid-window
            generators = rng.snapshot(host=True)
            rngs, windows = [generators], [self.state.window]
            if self.env.distributed:
                rngs, windows = [None] * self.env.world_size, [None] * self.env.world_size
                torch.distributed.all_gather_object(rngs, generators)
                torch.distributed.all_gather_object(windows, self.state.window)
            path = self.ckpt_dir / checkpoint.LAST
            meta = {"schedule": self.schedule.state_dict(), "state": dataclasses.asdict(self.state), "rng": rngs,
                    "run_id": self.id, "windows": windows, "topology": self.topology}
            if self.sharded:
                path = sharded_checkpoint.save(self.ckpt_dir, self.model, self.optimizer, meta)
            elif self.env.is_main:
                path = checkpoint.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                                        **meta}, self.ckpt_dir)
        distributed.barrier()
        self.saved = (self.state.step, path)

    def restore(self) -> int:
        """Resume from the newest readable checkpoint (``run.resume``), or start over; returns the step to go on from."""
        found = lifecycle.checkpoint_to_resume(
            self.ckpt_dir, self.cfg.run.resume, self.topology, self.env.is_main,
            *((sharded_checkpoint.NAMES, sharded_checkpoint.reader(self.model)) if self.sharded else ()))
        if found is not None:
            self.load_checkpoint(found.checkpoint)
            self.saved = (self.state.step, found.path)
        return self.state.step

    def load_checkpoint(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        # Checkpoints are taken in eval mode: the model holds x, and the optimizer's state dict says "eval".
        # Loading it puts the optimizer in eval mode consistent with x; train() then moves p to y.
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if protocols.has_modes(self.optimizer):
            self.optimizer.train()
        self.schedule.load_state_dict(ckpt["schedule"])
        self.state = TrainState(**ckpt["state"])
        rng.restore(ckpt["rng"][self.env.rank])
        self.state.window = tuple(ckpt["windows"][self.env.rank])

    def start_segment(self, commit: str) -> None:
        """Record this start (or resume), its code version and whether its optimizer step is compiled; warn when
        the run's earlier segments differ in either."""
        earlier = {seg["commit"] for seg in self.state.segments} - {commit}
        if earlier:
            log.warning("resuming at step %d with code %s, but earlier segments of this run ran %s: the result "
                        "mixes code versions (summary.json lists them under segments)", self.state.step, commit,
                        ", ".join(sorted(earlier)))
        compiled = compiles_step(self.optimizer)
        if any(seg.get("compiled_step", compiled) != compiled for seg in self.state.segments):
            log.warning("resuming at step %d with the optimizer step %s, but earlier segments of this run ran it %s "
                        "(RESEARCH_OPTIM_COMPILE, train.compile_optimizer): the two paths agree to float rounding, "
                        "not bit for bit, so this run is not what an uninterrupted one gives", self.state.step,
                        *(("compiled", "eager") if compiled else ("eager", "compiled")))
        self.state.segments.append({"step": self.state.step, "commit": commit, "host": socket.gethostname(),
                                    "threads": self.threads, "compiled_step": compiled,
                                    "started": dt.datetime.now().isoformat(timespec="seconds")})

    def prime_gradient_buckets(self, batch_loss: BatchLoss) -> None:
        """Let DDP rebuild its gradient buckets before this process's first step, leaving no other trace.

        DDP all-reduces a process's first backward in one bucket of all parameters and rebuilds its buckets, in
        the order the gradients became ready, at the next forward. The position of a gradient in a bucket decides
        the order in which the ranks' values are added (ring all-reduce), which with 3 ranks or more changes the
        rounding: a resumed process's first step would add up its gradients differently from the uninterrupted
        run's step. So every process starts with one forward/backward of its first batch whose gradients, buffers
        (BatchNorm statistics) and random state are then put back as they were.
        """
        generators, buffers = rng.snapshot(host=True), [b.detach().clone() for b in self.model.buffers()]
        batch_loss(True)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for buffer, saved in zip(self.model.buffers(), buffers):
                buffer.copy_(saved)
        rng.restore(generators)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, split: str = "val") -> dict[str, float]:
        """Loss and accuracy on ``split`` ("val", "test": all of it; "train": its first examples, as many as val
        has)."""
        data = {"val": self.dataset.val, "test": self.dataset.test, "train": self.dataset.train}[split]
        with protocols.evaluation_mode(self.optimizer):
            if protocols.has_modes(self.optimizer) and protocols.has_batch_norm(self.model):
                batches = (distributed.to_device(b, self.env.device) for b in self.dataset.train.train_batches(
                    self.cfg.train.batch_size, seed=self.cfg.seed + 7919, rank=self.env.rank,
                    world_size=self.env.world_size))
                protocols.recompute_batch_norm(self.model, batches, self.cfg.train.bn_recalibration_batches,
                                               self.net)
            self.model.eval()
            totals = torch.zeros(3, dtype=torch.float64, device=self.env.device)  # loss·n, correct, n
            limit = None if split == "val" else len(self.dataset.val)
            for batch in data.eval_batches(self.cfg.train.eval_batch_size, self.env.rank, self.env.world_size,
                                           limit=limit):
                x, y = distributed.to_device(batch, self.env.device)
                with self.autocast:
                    loss, correct = loss_and_correct(self.net(x), y)
                n = y.numel()
                totals += torch.stack([loss.double() * n, correct.double(), torch.tensor(n, dtype=torch.float64,
                                                                                          device=totals.device)])
            self.model.train()
        loss_sum, correct, n = distributed.all_reduce_sum(totals).tolist()
        result = {"loss": loss_sum / max(n, 1), "accuracy": correct / max(n, 1)}
        if self.spec.optimum_loss is not None:
            result["gap_to_optimum"] = result["loss"] - self.spec.optimum_loss
        return result

    def replicas_identical(self) -> bool:
        """Whether every rank holds bit-identical parameters (compared by checksum: ``distributed.differing_replicas``)."""
        differing = distributed.differing_replicas([(name, p) for name, p in self.model.named_parameters()
                                                    if p.requires_grad])
        if differing:
            log.warning("DDP replicas differ in %d parameter tensors: %s", len(differing), ", ".join(differing[:5]))
        return not differing

    # ------------------------------------------------------------------ logging
    def record(self, split: str, values: dict[str, Any]) -> dict[str, Any]:
        s = self.state
        rec = {"step": s.step, "split": split, "examples": s.examples, "train_time": round(s.train_time, 6),
               "eval_time": round(s.eval_time, 6), **values}
        if s.tokens:
            rec["tokens"] = s.tokens
        return rec

    def measurements(self, examples: int, seconds: float, per_rank: bool = False) -> dict[str, Any]:
        """Throughput of ``examples`` trained in ``seconds`` (examples/s, tokens/s, MFU) and the peak memory of the
        rank that held the most so far (``per_rank``: of every rank too) — one collective."""
        peaks = distributed.gather_float(throughput.peak_memory_gib(self.env.device), self.env.device)
        return {**throughput.rates(examples, seconds, self.tokens_per_example(), self.flops_per_example,
                                   self.peak_tflops, self.env.world_size), "peak_memory_gib": max(peaks),
                **({"peak_memory_gib_per_rank": peaks} if per_rank else {})}

    def flush_train_window(self, tracker: Tracker, window: LossWindow, since: tuple[int, float]) -> float:
        """Log the training window: mean loss over the ranks, lr, the throughput since ``since`` (examples,
        train_time at the previous log line), memory, the optimizer's diagnostics."""
        s, mean = self.state, window.mean_over_ranks()
        if not math.isfinite(mean) and self.cfg.train.nonfinite == "stop":
            raise Diverged(f"loss became {mean} by step {s.step}. {self.stop_advice()}")
        values = {"loss": mean, "lr": self.lr(), **self.measurements(s.examples - since[0], s.train_time - since[1]),
                  **protocols.diagnostics(self.optimizer)}
        if self.cfg.train.nonfinite == "skip":
            values["skipped"], s.skipped_logged = s.skipped - s.skipped_logged, s.skipped
        tracker.log(self.record("train", values))
        return mean

    def announce_compile(self) -> None:
        if compiles_step(self.optimizer):
            log.info("the optimizer step is compiled with torch.compile during the first step: about 8–15 s on a "
                     "CPU with an empty inductor cache, 2–5 s with a warm one, whatever the model's size "
                     "(benchmarks/README.md); train.compile_optimizer=false runs the eager step instead")
        if self.cfg.train.compile_model:
            log.info("the model is compiled with torch.compile during the first steps (and again for evaluation): "
                     "the first log line's throughput includes it")

    # ------------------------------------------------------------------ the run
    def run(self) -> dict[str, Any]:
        """The run's life (``lifecycle``): completed already, or lock → resume → train → summary.json."""
        cfg, env = self.cfg, self.env
        done = lifecycle.already_completed(self.dir) if cfg.run.resume else None
        if done is not None:
            if env.is_main:
                print(f"run {self.id} already completed: {self.dir}")
            return done
        with lifecycle.locked(self.dir, env.is_main):
            setup_logging(self.dir, env.is_main)
            tracker = Tracker(cfg, self.id, self.dir, env.is_main)
            return lifecycle.run_to_end(lambda: self.start_and_train(tracker), tracker, self.dir, self.progress,
                                        env.is_main)

    def progress(self) -> dict[str, int]:
        """How far the run got: the summary of a run that did not complete."""
        return {"step": self.state.step, "skipped_steps": self.state.skipped}

    def start_and_train(self, tracker: Tracker) -> dict[str, Any]:
        """Resume (or start), record the segment and the resolved config, train; returns the final numbers."""
        cfg, env = self.cfg, self.env
        resumed_from = self.restore()
        environment = run_environment(str(env.device), env.world_size, self.threads, self.threads_reason)
        self.start_segment(environment["commit"])
        if env.is_main:
            resolved = OmegaConf.to_container(cfg, resolve=True)
            resolved["run"]["id"] = self.id  # the identity, for reports and W&B
            (self.dir / "config.yaml").write_text(OmegaConf.to_yaml(resolved))
        tracker.start(resumed_from, environment, self.state.segments)
        log.info("run %s → %s%s", self.id, self.dir, f" (resumed at step {resumed_from})" if resumed_from else "")
        self.announce_compile()
        with StopFlag() as stop:
            return self._loop(tracker, stop)

    def _loop(self, tracker: Tracker, stop: StopFlag) -> dict[str, Any]:
        cfg, env, t, s = self.cfg, self.env, self.cfg.train, self.state
        batches: Iterator = self.dataset.train.train_batches(t.batch_size, seed=cfg.seed, start_step=s.step,
                                                             rank=env.rank, world_size=env.world_size)
        # (sum of losses, number of losses) since the last log line; restored from a checkpoint taken mid-window.
        window = LossWindow(*s.window, device=env.device)
        since = (s.examples, s.train_time)  # the throughput window starts here (a resume included)
        # all-reduce (DDP) or reduce-scatter (FSDP) the gradient with the last micro-batch only
        no_sync = (partial(fsdp.no_gradient_sync, self.model) if self.sharded else
                   self.net.no_sync if env.distributed else None)
        skip, primed = t.nonfinite == "skip", False
        last_train_loss, last_eval = math.nan, {}
        bar = _progress(t.steps, s.step, enabled=t.progress and env.is_main)
        segment = time.perf_counter()
        while s.step < t.steps:
            x, y = distributed.to_device(next(batches), env.device)
            batch_loss = BatchLoss(self.compute_loss, x, y, t.micro_batch_size, no_sync)
            if env.distributed and not self.sharded and not primed:
                self.prime_gradient_buckets(batch_loss)
                primed = True
            try:
                loss, skipped = protocols.optimizer_step(self.optimizer, batch_loss, self.params, t.grad_clip,
                                                         skip_nonfinite=skip)
            except protocols.NonFiniteUpdate as err:
                raise Diverged(f"step {s.step + 1}: {err}. {self.stop_advice()}") from None
            self.schedule.step()
            s.step += 1
            s.examples += t.batch_size
            s.tokens += t.batch_size * self.tokens_per_example()
            if skipped:  # the same decision on every rank
                s.skipped += 1
                s.consecutive_skips += 1
                if s.consecutive_skips >= t.max_consecutive_skips:
                    raise Diverged(f"{s.consecutive_skips} steps in a row had a non-finite loss or gradient and were "
                                   f"skipped (train.max_consecutive_skips), up to step {s.step}. {self.stop_advice()}")
            else:
                s.consecutive_skips = 0
                window.add(loss)  # stop mode adds every loss: a non-finite one stops the run at the next log line
            bar.update(1)

            at_end = s.step == t.steps
            eval_now = at_end or (t.eval_every and s.step % t.eval_every == 0)
            ckpt_now = at_end or (t.checkpoint_every and s.step % t.checkpoint_every == 0)
            if s.step % t.log_every == 0 or eval_now or ckpt_now:
                throughput.synchronize(env.device)  # the clock counts the work queued on the device
                now = time.perf_counter()
                s.train_time += now - segment
                last_train_loss = self.flush_train_window(tracker, window, since)
                since = (s.examples, s.train_time)
                bar.set_postfix(loss=f"{last_train_loss:.4f}", lr=f"{self.lr():.2e}",
                                ex_per_s=f"{s.examples / max(s.train_time, 1e-9):.0f}",
                                refresh=False)
                if eval_now:
                    last_eval = self.evaluate()
                    s.eval_time += time.perf_counter() - now
                    tracker.log(self.record("val", last_eval))
                    bar.write(f"step {s.step}: val loss {last_eval['loss']:.4f} accuracy {last_eval['accuracy']:.4f}")
                if ckpt_now:
                    self.save_checkpoint(window)
                segment = time.perf_counter()
            # Ranks agree on a stop signal at log steps (a collective + host sync); alone, at every step (free).
            signum = stop.agreed(env.device) if (not env.distributed or s.step % t.log_every == 0) else 0
            if signum and not at_end:
                s.train_time += time.perf_counter() - segment
                self.save_checkpoint(window)
                bar.close()
                raise Preempted(signum, s.step)
        bar.close()
        train_eval = self.evaluate("train")
        test = self.final_test(tracker)
        final = {"step": s.step, "examples": s.examples, "train_loss": last_train_loss,
                 "train_eval_loss": train_eval["loss"], "train_accuracy": train_eval["accuracy"],
                 "val_loss": last_eval.get("loss", math.nan), "val_accuracy": last_eval.get("accuracy", math.nan),
                 "steps_per_s": s.step / s.train_time if s.train_time > 0 else math.nan,
                 **self.measurements(s.examples, s.train_time, per_rank=True),
                 "train_time": s.train_time, "eval_time": s.eval_time, "skipped_steps": s.skipped}
        if env.distributed and not self.sharded:  # FSDP has shards, not replicas
            final["replicas_identical"] = self.replicas_identical()
        if "gap_to_optimum" in last_eval:
            final["val_gap_to_optimum"] = last_eval["gap_to_optimum"]
        final.update({f"test_{key}": value for key, value in test.items()})
        return final

    def final_test(self, tracker: Tracker) -> dict[str, float]:
        """The test split, evaluated once at the end of the run and logged as split "test" (when the data has one).
        Reported apart from validation: tuning selects on validation only."""
        if self.dataset.test is None:
            return {}
        test = self.evaluate("test")
        tracker.log(self.record("test", test))
        return test


def compiles_step(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the optimizer's first step will run torch.compile (the library's compiled fast paths: ``paths``)."""
    implementation, paths = getattr(optimizer, "implementation", None), getattr(optimizer, "paths", ())
    if implementation not in IMPLEMENTATIONS:
        return False
    return any(resolve(implementation, paths, sum(p.numel() for p in group["params"]),
                       sharded=any(is_sharded(p) for p in group["params"])) == "compiled"
               and any(compilable([p]) for p in group["params"])
               for group in optimizer.param_groups)


class _NoBar:
    def update(self, n: int) -> None: ...
    def set_postfix(self, **kw: Any) -> None: ...
    def write(self, msg: str) -> None: log.info(msg)
    def close(self) -> None: ...


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True, mininterval=0.5)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run ``cfg`` in this process (one rank of a distributed run, or the only one)."""
    cfg = with_resolved_device(cfg)
    env = distributed.setup(cfg.train.device)
    try:
        return Trainer(cfg, env).run()
    finally:
        distributed.teardown()
