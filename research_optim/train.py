"""The training loop, top to bottom: build, resume, train with periodic logs/evals/checkpoints, summarise.

Host syncs happen only at logging, evaluation and checkpoint steps. Everything a rank writes goes through rank 0
(``Tracker``, checkpoints). Optimizer protocols (plain / closure / train-eval modes) live in ``protocols``.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import signal
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from research_optim import checkpoint, distributed, protocols
from research_optim.build import build_data, build_lr_schedule, build_model, build_optimizer
from research_optim.environment import run_environment
from research_optim.optim.implementation import set_compile_enabled
from research_optim.data.base import DataSpec
from research_optim.preemption import Preempted, StopFlag, requeue_slurm_job
from research_optim.run_dir import RunLock, run_dir, run_id
from research_optim.tracking import Tracker

log = logging.getLogger("research_optim")


class NonFiniteLoss(RuntimeError):
    pass


@dataclasses.dataclass
class TrainState:
    """Everything besides model/optimizer/schedule/RNG that a resumed run needs to continue bit for bit."""

    step: int = 0
    examples: int = 0
    tokens: int = 0
    train_time: float = 0.0
    eval_time: float = 0.0
    window: tuple[float, int] = (0.0, 0)  # (loss sum, count) since the last log line, at the checkpoint


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
        """Mean loss over the window's steps on every rank (the loop's one regular host sync); then empty it."""
        both = torch.stack([self.total, self.total.new_tensor(float(self.count))])
        total, count = distributed.all_reduce_sum(both).tolist()
        self.total.zero_()
        self.count = 0
        return total / count if count else math.nan


def loss_and_correct(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy (per token for LMs) and the number of correct predictions."""
    flat_logits, flat_targets = logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1)
    loss = F.cross_entropy(flat_logits, flat_targets)
    return loss, (flat_logits.argmax(-1) == flat_targets).sum()


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def setup_logging(directory: Path | None, is_main: bool) -> None:
    root = logging.getLogger("research_optim")
    root.setLevel(logging.INFO if is_main else logging.WARNING)
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


def _to(batch: tuple[torch.Tensor, torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)


class Trainer:
    """One run. ``run()`` returns the final summary (also written to summary.json)."""

    def __init__(self, cfg: DictConfig, env: distributed.Env) -> None:
        self.cfg, self.env, t = cfg, env, cfg.train
        seed_everything(cfg.seed)
        self.dataset = build_data(cfg.data)
        self.spec: DataSpec = self.dataset.spec
        self.model = build_model(cfg.model, self.dataset).to(env.device)
        train_size = len(self.dataset.train) if hasattr(self.dataset.train, "__len__") else None  # streams: None
        steps_per_epoch = max(1, train_size // (t.batch_size * env.world_size)) if train_size else None
        set_compile_enabled(None if t.compile_optimizer else False)  # true: allowed (RESEARCH_OPTIM_COMPILE=0 wins)
        self.optimizer = build_optimizer(cfg.optimizer, self.model, t.weight_decay_norm_and_bias, steps_per_epoch)
        self.schedule = build_lr_schedule(cfg.schedule, self.optimizer, t.steps)
        if protocols.has_modes(self.optimizer):
            self.optimizer.train()  # Schedule-Free optimizers start in eval mode, as in the package
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.net: nn.Module = DistributedDataParallel(self.model) if env.distributed else self.model
        # Dropout differs per rank; parameters were initialised identically above (same seed everywhere).
        torch.manual_seed(cfg.seed * 1_000_003 + env.rank)
        self.autocast = (torch.autocast(env.device.type, dtype=torch.bfloat16) if t.precision == "bf16"
                         else nullcontext())
        self.id, self.dir = run_id(cfg), run_dir(cfg)
        self.ckpt_path = self.dir / "checkpoints" / "last.pt"
        self.state = TrainState()

    # ------------------------------------------------------------------ helpers
    def compute_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with self.autocast:
            return loss_and_correct(self.net(x), y)[0]

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def tokens_per_example(self) -> int:
        return self.spec.input_shape[0] if self.spec.task == "lm" else 0

    # ------------------------------------------------------------------ checkpoint
    def save_checkpoint(self, window: LossWindow) -> None:
        self.state.window = window.state()  # local to each rank; a preemption may land mid-window
        rng = checkpoint.rng_state()
        rngs, windows = [rng], [self.state.window]
        if self.env.distributed:
            rngs, windows = [None] * self.env.world_size, [None] * self.env.world_size
            torch.distributed.all_gather_object(rngs, rng)
            torch.distributed.all_gather_object(windows, self.state.window)
        with protocols.evaluation_mode(self.optimizer):
            if self.env.is_main:
                checkpoint.save_atomic({
                    "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "schedule": self.schedule.state_dict(), "state": dataclasses.asdict(self.state),
                    "rng": rngs, "run_id": self.id, "windows": windows,
                }, self.ckpt_path)
        distributed.barrier()

    def load_checkpoint(self) -> None:
        ckpt = checkpoint.load(self.ckpt_path)
        self.model.load_state_dict(ckpt["model"])
        # Checkpoints are taken in eval mode: the model holds x, and the optimizer's state dict says "eval".
        # Loading it puts the optimizer in eval mode consistent with x; train() then moves p to y.
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if protocols.has_modes(self.optimizer):
            self.optimizer.train()
        self.schedule.load_state_dict(ckpt["schedule"])
        self.state = TrainState(**ckpt["state"])
        rngs = ckpt["rng"]
        if len(rngs) == self.env.world_size:
            checkpoint.set_rng_state(rngs[self.env.rank])
            self.state.window = tuple(ckpt["windows"][self.env.rank])
        else:
            log.warning("checkpoint has RNG states for %d ranks, this run has %d: reseeding", len(rngs),
                        self.env.world_size)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, split: str = "val") -> dict[str, float]:
        """Loss and accuracy on ``split`` ("val": all of it; "train": as many examples as val has)."""
        data = self.dataset.val if split == "val" else self.dataset.train
        with protocols.evaluation_mode(self.optimizer):
            if protocols.has_modes(self.optimizer) and protocols.has_batch_norm(self.model):
                batches = (_to(b, self.env.device) for b in self.dataset.train.train_batches(
                    self.cfg.train.batch_size, seed=self.cfg.seed + 7919, rank=self.env.rank,
                    world_size=self.env.world_size))
                protocols.recompute_batch_norm(self.model, batches, self.cfg.train.bn_recalibration_batches,
                                               self.net)
            self.model.eval()
            totals = torch.zeros(3, dtype=torch.float64, device=self.env.device)  # loss·n, correct, n
            limit = math.inf if split == "val" else max(1, len(self.dataset.val) // self.env.world_size)
            examples = 0
            for batch in data.eval_batches(self.cfg.train.eval_batch_size, self.env.rank, self.env.world_size):
                if examples >= limit:
                    break
                examples += len(batch[1])
                x, y = _to(batch, self.env.device)
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
        """Whether every rank holds bit-identical parameters (elementwise max == min across ranks)."""
        flat = torch.cat([p.detach().reshape(-1).double() for p in self.params])
        high, low = flat.clone(), flat.clone()
        torch.distributed.all_reduce(high, op=torch.distributed.ReduceOp.MAX)
        torch.distributed.all_reduce(low, op=torch.distributed.ReduceOp.MIN)
        same = bool(torch.equal(high, low))
        if not same:
            log.warning("DDP replicas differ: max |Δ| = %.3g", (high - low).abs().max().item())
        return same

    # ------------------------------------------------------------------ logging
    def record(self, split: str, values: dict[str, Any]) -> dict[str, Any]:
        s = self.state
        rec = {"step": s.step, "split": split, "examples": s.examples, "train_time": round(s.train_time, 6),
               "eval_time": round(s.eval_time, 6), **values}
        if s.tokens:
            rec["tokens"] = s.tokens
        return rec

    def flush_train_window(self, tracker: Tracker, window: LossWindow) -> float:
        mean = window.mean_over_ranks()
        if not math.isfinite(mean) and self.cfg.train.nonfinite == "stop":
            raise NonFiniteLoss(
                f"loss became {mean} by step {self.state.step}; the run stops and keeps its last good checkpoint "
                f"({self.ckpt_path if self.ckpt_path.exists() else 'none written yet'}). Lower optimizer.lr, enable "
                "train.grad_clip, or set train.nonfinite=skip to skip such steps.")
        tracker.log(self.record("train", {"loss": mean, "lr": self.lr(), **protocols.diagnostics(self.optimizer)}))
        return mean

    # ------------------------------------------------------------------ the run
    def run(self) -> dict[str, Any]:
        cfg, env = self.cfg, self.env
        lock = RunLock(self.dir)
        if env.is_main:
            self.dir.mkdir(parents=True, exist_ok=True)
            lock.acquire()
        distributed.barrier()
        resumed_from = None
        if cfg.run.resume and self.ckpt_path.exists():
            self.load_checkpoint()
            resumed_from = self.state.step
            done = _completed_summary(self.dir)
            if resumed_from >= cfg.train.steps and done is not None:
                if env.is_main:
                    lock.release()
                print(f"run {self.id} already completed: {self.dir}")
                return {"status": "completed", **done, "run_dir": str(self.dir)}
        if env.is_main:
            resolved = OmegaConf.to_container(cfg, resolve=True)
            resolved["run"]["id"] = self.id  # the identity, for reports and W&B
            (self.dir / "config.yaml").write_text(OmegaConf.to_yaml(resolved))
        setup_logging(self.dir, env.is_main)
        tracker = Tracker(cfg, self.id, self.dir, env.is_main)
        tracker.start(resumed_from, run_environment(str(env.device), env.world_size))
        log.info("run %s → %s%s", self.id, self.dir,
                 f" (resumed at step {resumed_from})" if resumed_from is not None else "")
        try:
            with StopFlag() as stop:
                final = self._loop(tracker, stop)
        except NonFiniteLoss as err:
            log.error("%s", err)
            tracker.finish("diverged", {"step": self.state.step}, str(err))
            return {"status": "diverged", "error": str(err), "run_dir": str(self.dir)}
        except Preempted as err:
            log.warning("%s", err)
            tracker.finish("preempted", {"step": self.state.step}, str(err))
            requeued = env.is_main and err.signum == signal.SIGUSR2 and requeue_slurm_job()
            return {"status": "preempted", "error": str(err), "run_dir": str(self.dir), "requeued": requeued,
                    "step": self.state.step}
        except BaseException as err:
            tracker.finish("failed", {"step": self.state.step}, f"{type(err).__name__}: {err}")
            raise
        finally:
            lock.release()
        tracker.finish("completed", final)
        return {"status": "completed", **final, "run_dir": str(self.dir)}

    def _loop(self, tracker: Tracker, stop: StopFlag) -> dict[str, Any]:
        cfg, env, t, s = self.cfg, self.env, self.cfg.train, self.state
        global_batch = t.batch_size * env.world_size
        batches: Iterator = self.dataset.train.train_batches(t.batch_size, seed=cfg.seed, start_step=s.step,
                                                             rank=env.rank, world_size=env.world_size)
        # (sum of losses, number of losses) since the last log line; restored from a checkpoint taken mid-window.
        window = LossWindow(*s.window, device=env.device)
        skip = t.nonfinite == "skip"
        start_step, last_train_loss, last_eval = s.step, math.nan, {}
        bar = _progress(t.steps, s.step, enabled=t.progress and env.is_main)
        segment = time.perf_counter()
        while s.step < t.steps:
            x, y = _to(next(batches), env.device)
            loss = protocols.optimizer_step(self.optimizer, lambda: self.compute_loss(x, y), self.params,
                                            t.grad_clip, skip_nonfinite=skip)
            self.schedule.step()
            if not skip or torch.isfinite(loss):  # skip mode (already synced per step) leaves them out
                window.add(loss)
            s.step += 1
            s.examples += global_batch
            s.tokens += global_batch * self.tokens_per_example()
            bar.update(1)

            at_end = s.step == t.steps
            eval_now = at_end or (t.eval_every and s.step % t.eval_every == 0)
            ckpt_now = at_end or (t.checkpoint_every and s.step % t.checkpoint_every == 0)
            if s.step % t.log_every == 0 or eval_now or ckpt_now:
                now = time.perf_counter()
                s.train_time += now - segment
                last_train_loss = self.flush_train_window(tracker, window)
                bar.set_postfix(loss=f"{last_train_loss:.4f}", lr=f"{self.lr():.2e}",
                                ex_per_s=f"{(s.step - start_step) * global_batch / max(s.train_time, 1e-9):.0f}",
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
        steps_done = s.step - start_step
        final = {"step": s.step, "examples": s.examples, "train_loss": last_train_loss,
                 "train_eval_loss": train_eval["loss"], "train_accuracy": train_eval["accuracy"],
                 "val_loss": last_eval.get("loss", math.nan), "val_accuracy": last_eval.get("accuracy", math.nan),
                 "steps_per_s": steps_done / s.train_time if s.train_time > 0 else math.nan,
                 "train_time": s.train_time, "eval_time": s.eval_time}
        if env.distributed:
            final["replicas_identical"] = self.replicas_identical()
        if "gap_to_optimum" in last_eval:
            final["val_gap_to_optimum"] = last_eval["gap_to_optimum"]
        return final


def _completed_summary(directory: Path) -> dict[str, Any] | None:
    import json

    path = directory / "summary.json"
    if not path.exists():
        return None
    summary = json.loads(path.read_text())
    return summary["final"] if summary.get("status") == "completed" else None


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
    env = distributed.setup(cfg.train.device)
    try:
        return Trainer(cfg, env).run()
    finally:
        distributed.teardown()
