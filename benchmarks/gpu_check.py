"""The prepared GPU check: one command, one table — printed and written to a file — in at most 6 minutes.

    python -m benchmarks.gpu_check --out gpu_check.md        # on a machine with a CUDA GPU
    python -m benchmarks.gpu_check --device cpu --quick      # small sizes on a CPU: the check of the check (a test)

(a) **compiled == reference**: every compiled optimizer step against its reference path on the device, float32 and
    bfloat16 parameters, 100 steps. Before each step both start from the same parameters and state (the
    reference's, copied), get the same gradients, and the step's results are compared elementwise: float32 within
    1e-6 relative + 1e-7 (the CPU tests' tolerance), bfloat16 within 2^-6 relative + 1e-3 (a few bfloat16 roundings:
    inductor keeps a fused kernel's intermediates in float32, eager rounds every op to bfloat16). Reported: the
    worst |Δ| / tolerance and the elements beyond it.
(b) **step time**: ms per ``step()`` of every library optimizer — reference, foreach and default (compiled) paths —
    against torch's ``AdamW(fused=True)`` on a GPT's parameters, timed round-robin (medians), and the fraction of the
    memory-traffic floor reached (bytes/param × N ÷ the measured device copy bandwidth).
(c) **training**: a GPT and a ViT trained a few steps with each seed optimizer through the training loop's own step
    (``BatchLoss`` + ``protocols.optimizer_step``, bf16 autocast on CUDA, pinned non-blocking copies of batches
    cycling over a small random pool): examples/s, tokens/s, MFU (``throughput``), peak memory, first → last loss;
    and the GPT with 4 micro-batches and with ``torch.compile`` of the model. (Between (a) and (b): the float32 loss
    and gradients of 4 micro-batches against one pass over the batch, 1e-5 relative.)

Rows past ``--budget-s`` are listed as skipped. Imports nothing of Hydra, OmegaConf, submitit, wandb or datasets
(the GPU machine has none): ``research_optim.optim``, ``.models``, ``.protocols``, ``.batch_loss``, ``.throughput``,
``.distributed`` and timm. Exit code 1 when a row failed.
"""
from __future__ import annotations

import argparse
import math
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import (
    copy_bandwidth, device_name, gpt_shapes, make_params, smoke_shapes, time_round_robin, train_mode,
)
from benchmarks.step_time import RULES
from research_optim import protocols, throughput
from research_optim.batch_loss import BatchLoss, loss_and_correct
from research_optim.data.base import DataSpec
from research_optim.distributed import to_device
from research_optim.optim import (
    SGD, AdamW, AdamWScheduleFree, CautiousAdamW, CautiousLion, Lion, SaLSA, SGDScheduleFree,
)
from research_optim.optim.implementation import set_compile_enabled

HEADERS = ("check", "subject", "setting", "result", "figures")
TOLERANCES = {torch.float32: (1e-6, 1e-7), torch.bfloat16: (2.0**-6, 1e-3)}  # (rtol, atol) per step


class Table:
    """One markdown table, printed and appended to ``path`` row by row (a run cut short keeps its rows)."""

    def __init__(self, path: Path, title: str) -> None:
        self.path, self.failed = path, False
        self._emit(f"{title}\n\n| {' | '.join(HEADERS)} |\n|{'|'.join('---' for _ in HEADERS)}|", mode="w")

    def row(self, check: str, subject: str, setting: str, result: str, figures: str) -> None:
        self.failed |= result in ("FAIL", "ERROR")
        self._emit(f"| {check} | {subject} | {setting} | {result} | {figures} |")

    def _emit(self, text: str, mode: str = "a") -> None:
        print(text, flush=True)
        with open(self.path, mode) as f:
            f.write(text + "\n")


@dataclass
class Budget:
    seconds: float
    start: float = field(default_factory=time.perf_counter)

    def spent(self) -> bool:
        return time.perf_counter() - self.start > self.seconds


def guarded(table: Table, budget: Budget, check: str, subject: str, setting: str,
            run: Callable[[], tuple[str, str]]) -> None:
    """One row: ``run()`` → (result, figures); past the budget it is skipped, an exception is an ERROR row."""
    if budget.spent():
        table.row(check, subject, setting, "SKIP", "time budget spent")
        return
    try:
        result, figures = run()
    except Exception as err:  # noqa: BLE001 — one broken row must not cost the others
        traceback.print_exc()
        result, figures = "ERROR", f"{type(err).__name__}: {err}".replace("|", "/").replace("\n", " ")[:300]
    table.row(check, subject, setting, result, figures)


# ----------------------------------------------------------------------------- (a) compiled == reference
COMPILED_STEPS: dict[str, Callable[[list, str], torch.optim.Optimizer]] = {
    "lion": lambda ps, impl: Lion(ps, lr=1e-3, weight_decay=0.1, implementation=impl),
    "c_lion": lambda ps, impl: CautiousLion(ps, lr=1e-3, weight_decay=0.1, implementation=impl),
    "adamw (library)": lambda ps, impl: AdamW(ps, lr=1e-2, weight_decay=0.1, implementation=impl),
    "c_adamw": lambda ps, impl: CautiousAdamW(ps, lr=1e-2, weight_decay=0.1, implementation=impl),
    "sgd nesterov, cautious": lambda ps, impl: SGD(ps, lr=1e-2, momentum=0.9, nesterov=True, weight_decay=0.1,
                                                   cautious="indicator_mean", implementation=impl),
    "sf_adamw": train_mode(AdamWScheduleFree, lr=1e-2, warmup_steps=3, weight_decay=0.1),
    "sf_sgd": train_mode(SGDScheduleFree, lr=1e-2, warmup_steps=3, weight_decay=0.1),
}


def _copy_state(source: torch.optim.Optimizer, target: torch.optim.Optimizer, source_params: list,
                target_params: list) -> None:
    with torch.no_grad():
        for s, t in zip(source_params, target_params):
            t.copy_(s)
            for key, value in source.state[s].items():
                if isinstance(value, torch.Tensor) and key in target.state[t]:
                    target.state[t][key].copy_(value)


def compiled_equals_reference(name: str, device: torch.device, dtype: torch.dtype, shapes: list, steps: int):
    """(result, figures) of ``steps`` steps, each from the reference's parameters and state (module docstring)."""
    build = COMPILED_STEPS[name]
    init = make_params(shapes, device, dtype, seed=0)
    fast_p = [nn.Parameter(p.detach().clone()) for p in init]
    ref_p = [nn.Parameter(p.detach().clone()) for p in init]
    fast, ref = build(fast_p, "compiled"), build(ref_p, "reference")
    rtol, atol = TOLERANCES[dtype]
    gen = torch.Generator(device=device).manual_seed(1)
    worst, beyond, elements = 0.0, 0, 0
    for step in range(steps):
        for a, b in zip(fast_p, ref_p):
            b.grad = (b.detach() + 0.5 * torch.randn(b.shape, generator=gen, device=device, dtype=torch.float32)
                      ).to(dtype)
            a.grad = b.grad.clone()
        if step:
            _copy_state(ref, fast, ref_p, fast_p)
        fast.step()
        ref.step()
        for a, b in zip(fast_p, ref_p):
            delta = (a.detach().float() - b.detach().float()).abs()
            allowed = atol + rtol * b.detach().float().abs()
            worst = max(worst, float((delta / allowed).max()))
            beyond += int((delta > allowed).sum())
            elements += a.numel()
    figures = (f"worst |Δ|/tol {worst:.2g}, {beyond} of {elements} element-steps beyond (rtol {rtol:.2g}, "
               f"atol {atol:.2g}), {steps} steps")
    return ("PASS" if beyond == 0 else "FAIL"), figures


# ----------------------------------------------------------------------------- (b) step time
STEP_TIME_RULES = [r for r in RULES if r.name in ("lion", "c_lion", "adamw (ours)", "c_adamw", "cautious sgd",
                                                  "sf_adamw", "sf_sgd")]


def step_time(rule, device: torch.device, shapes: list, repeats: int, bandwidth: float):
    numel = sum(math.prod(s) for s in shapes)
    fused = torch.optim.AdamW(make_params(shapes, device), lr=1e-3, fused=True)
    reference = rule.ours(make_params(shapes, device), "reference")
    # the multi-tensor path too: the compiled step is called once per tensor, which may leave a GPU host-bound
    foreach = rule.ours(make_params(shapes, device), "foreach")
    default = rule.ours(make_params(shapes, device), "auto")
    default.step()  # compiles (when it will) outside the timing
    t = time_round_robin({"fused": fused.step, "reference": reference.step, "foreach": foreach.step,
                          "default": default.step}, device, repeats)
    floor_ms = rule.bytes_per_param * numel / bandwidth * 1e3
    figures = (f"default {t['default'] * 1e3:.3g} ms = {t['default'] / t['fused']:.2f}× fused AdamW "
               f"({t['fused'] * 1e3:.3g} ms); foreach path {t['foreach'] / t['fused']:.2f}×; "
               f"reference path {t['reference'] / t['fused']:.2f}×; "
               f"{floor_ms / (t['default'] * 1e3):.0%} of the floor ({rule.bytes_per_param} B/param: "
               f"{floor_ms:.3g} ms)")
    return "MEASURED", figures


# ----------------------------------------------------------------------------- (c) training
SEED_OPTIMIZERS: dict[str, Callable[[list], torch.optim.Optimizer]] = {  # the configs' defaults, one param group
    "adamw (torch)": lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.01),
    "c_adamw": lambda ps: CautiousAdamW(ps, lr=1e-3, weight_decay=0.01),
    "lion": lambda ps: Lion(ps, lr=1e-4),
    "c_lion": lambda ps: CautiousLion(ps, lr=1e-4),
    "sf_adamw": lambda ps: train_mode(AdamWScheduleFree, lr=2.5e-3)(ps, "auto"),
    "salsa": lambda ps: SaLSA(ps),
}


@dataclass
class Workload:
    name: str
    build: Callable[[], nn.Module]
    batches: Callable[[int], list[tuple[torch.Tensor, torch.Tensor]]]  # pool of host batches
    batch_size: int
    tokens_per_example: int


def gpt_workload(quick: bool) -> Workload:
    from research_optim.models.gpt import GPT

    layers, width, heads, seq, vocab, batch = (2, 64, 4, 32, 64, 8) if quick else (12, 768, 12, 1024, 50304, 16)
    spec = DataSpec("lm", (seq,), vocab)

    def batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(0)
        tokens = [torch.randint(0, vocab, (batch, seq + 1), generator=gen) for _ in range(n)]
        return [(t[:, :-1], t[:, 1:]) for t in tokens]

    return Workload(f"gpt {layers}×{width}, T={seq}, V={vocab}", lambda: GPT(spec, layers, heads, width), batches,
                    batch, seq)


def vit_workload(quick: bool) -> Workload:
    from research_optim.models.vision import vit

    arch, size, classes, batch = ("vit_t", 8, 10, 8) if quick else ("vit_s", 224, 1000, 128)
    spec = DataSpec("classification", (3, size, size), classes)

    def batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(0)
        return [(torch.randn(batch, 3, size, size, generator=gen), torch.randint(0, classes, (batch,), generator=gen))
                for _ in range(n)]

    return Workload(f"{arch} {size}×{size}, {classes} classes", lambda: vit(spec, arch=arch), batches, batch, 0)


def measured_train_flops_per_example(model: nn.Module, example: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Forward + backward FLOPs of one example by torch's FLOP counter (attention through the math kernel, whose
    matmuls it counts), for models without their own ``train_flops_per_example``."""
    x, y = (t[:1] for t in example)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        loss_and_correct(model(x), y)[0].backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def micro_batches_equal_one_batch(work: Workload, device: torch.device, parts: int = 4):
    """(result, figures): the float32 loss and gradients of ``parts`` micro-batches against one pass over the
    batch — equal up to summation order, which the kernels a batch size picks can change: within 1e-5 relative
    (loss; each gradient tensor in norm)."""
    torch.manual_seed(0)
    model = work.build().to(device)
    x, y = to_device(work.batches(1)[0], device)
    passes = []
    for micro_batch_size in (None, work.batch_size // parts):
        model.zero_grad(set_to_none=True)
        loss = BatchLoss(lambda a, b: loss_and_correct(model(a), b)[0], x, y, micro_batch_size)()
        passes.append((float(loss), [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]))
    (whole_loss, whole), (micro_loss, micro) = passes
    loss_error = abs(micro_loss - whole_loss) / abs(whole_loss)
    grad_error = max(float((m - w).norm() / w.norm().clamp_min(1e-30)) for m, w in zip(micro, whole))
    figures = f"loss rel. Δ {loss_error:.2g}, worst gradient rel. Δ (norm) {grad_error:.2g}, {len(whole)} tensors"
    return ("PASS" if max(loss_error, grad_error) <= 1e-5 else "FAIL"), figures


def train(work: Workload, make_optimizer: Callable[[list], torch.optim.Optimizer], device: torch.device,
          steps: int, warmup: int, micro_batch_size: int | None = None, compile_model: bool = False):
    torch.manual_seed(0)
    model = work.build().to(device)
    pool = work.batches(4)
    flops = throughput.train_flops_per_example(model)
    if flops is None:
        flops = measured_train_flops_per_example(model, to_device(pool[0], device))
    net = torch.compile(model) if compile_model else model
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params)
    precision = "bf16" if device.type == "cuda" else "fp32"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()

    def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with autocast:
            return loss_and_correct(net(x), y)[0]

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    losses: list[float] = []
    for step in range(warmup + steps):
        if step == warmup:
            throughput.synchronize(device)
            start = time.perf_counter()
        x, y = to_device(pool[step % len(pool)], device)
        loss, _ = protocols.optimizer_step(optimizer, BatchLoss(loss_of, x, y, micro_batch_size), params, 1.0)
        losses.append(loss)
    throughput.synchronize(device)
    seconds = time.perf_counter() - start
    first, last = float(losses[0]), float(losses[-1])
    rates = throughput.rates(steps * work.batch_size, seconds, work.tokens_per_example, flops,
                             throughput.peak_tflops(device, precision, None), 1)
    figures = [f"{rates['examples_per_s']:.4g} ex/s"]
    if "tokens_per_s" in rates:
        figures.append(f"{rates['tokens_per_s']:.4g} tok/s")
    figures.append(f"MFU {rates['mfu']:.1%}" if "mfu" in rates else "MFU: no peak known for this device")
    figures += [f"peak {throughput.peak_memory_gib(device):.3g} GiB", f"loss {first:.4g} → {last:.4g}",
                f"{flops / 1e9:.4g} GFLOP/example"]
    finite = all(math.isfinite(float(v)) for v in losses)
    return ("PASS" if finite else "FAIL"), ", ".join(figures)


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="small sizes and few steps (checks the script)")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.md"), help="the table, as markdown")
    parser.add_argument("--budget-s", type=float, default=330.0, help="rows starting later are skipped")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device (use --device cpu --quick to check the script)")
    set_compile_enabled(True)  # the check is about the compiled paths, whatever RESEARCH_OPTIM_COMPILE says
    budget = Budget(args.budget_s)
    bandwidth = copy_bandwidth(device, numel=1 << 20 if args.quick else 1 << 27)
    cuda = f", CUDA {torch.version.cuda}" if device.type == "cuda" else ""
    table = Table(args.out, f"GPU check on {device_name(device)}, torch {torch.__version__}{cuda}; measured copy "
                            f"bandwidth {bandwidth / 1e9:.4g} GB/s{' (--quick)' if args.quick else ''}")

    shapes = smoke_shapes() if args.quick else [*smoke_shapes(), (257, 1031), (4096,)]
    for dtype in (torch.float32, torch.bfloat16):
        for name in COMPILED_STEPS:
            guarded(table, budget, "compiled == reference", name, str(dtype).removeprefix("torch."),
                    lambda: compiled_equals_reference(name, device, dtype, shapes, steps=5 if args.quick else 100))
    gpt = gpt_workload(args.quick)
    guarded(table, budget, "micro-batches == one batch", gpt.name, f"batch {gpt.batch_size} as 4 micro-batches, "
            "float32", lambda: micro_batches_equal_one_batch(gpt, device))

    time_shapes = smoke_shapes() if args.quick else gpt_shapes(n_layer=12, n_embd=768, vocab=50304, context=1024)
    numel = sum(math.prod(s) for s in time_shapes)
    for rule in STEP_TIME_RULES:
        guarded(table, budget, "step time", rule.name, f"{numel / 1e6:.3g}M params, float32",
                lambda: step_time(rule, device, time_shapes, 3 if args.quick else 20, bandwidth))

    steps, warmup = (2, 1) if args.quick else (20, 3)
    set_compile_enabled(not args.quick)  # --quick trains with eager optimizer steps: (a) compiled them already
    precision = "bf16 autocast" if device.type == "cuda" else "fp32"
    for work in (gpt, vit_workload(args.quick)):
        for name, make in SEED_OPTIMIZERS.items():
            guarded(table, budget, "training", f"{work.name} / {name}",
                    f"batch {work.batch_size}, {precision}, {steps} steps",
                    lambda: train(work, make, device, steps, warmup))
    guarded(table, budget, "training", f"{gpt.name} / adamw (torch)",
            f"batch {gpt.batch_size} as 4 micro-batches, {precision}, {steps} steps",
            lambda: train(gpt, SEED_OPTIMIZERS["adamw (torch)"], device, steps, warmup,
                          micro_batch_size=gpt.batch_size // 4))
    guarded(table, budget, "training", f"{gpt.name} / adamw (torch)",
            f"batch {gpt.batch_size}, torch.compile(model), {precision}, {steps} steps",
            lambda: train(gpt, SEED_OPTIMIZERS["adamw (torch)"], device, steps, warmup, compile_model=True))
    print(f"\n{time.perf_counter() - budget.start:.0f} s; table written to {args.out}")
    return 1 if table.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
