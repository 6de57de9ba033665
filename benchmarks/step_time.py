"""Optimizer step time vs torch's fused AdamW, the memory-traffic floor, and the first step's compile time.

    python -m benchmarks.step_time                       # ViT-S and GPT parameter sets, CPU, one core
    python -m benchmarks.step_time --sets vit_s --rules lion c_lion --rounds 12
    python -m benchmarks.step_time --device cuda --no-first-step

The measuring rule (a shared machine moves absolute times by 3×): the process is pinned to one core with one
thread (``--core``); every rule's default step (``implementation="auto"``: compiled at these sizes), its reference
path, its public package's step, torch ``AdamW(fused=True)`` (the yardstick) and a bandwidth probe (``a += b``,
12 bytes per element) are timed round-robin, ``--repeats`` calls each per round; every round builds the four
optimizers anew, in an order rotated by one from round to round (the set of tensors allocated first steps a few
percent slower here); a ratio is the median over ``--rounds`` rounds of the per-round median ratios, and a round in
which the rule ran below its own floor relative to the yardstick (the yardstick was slowed down) is discarded. The
load average is printed before and after.

``floor ×fused`` is the rule's minimum float32 traffic ÷ AdamW's 28 bytes/param (Lion: read p, g, m, write p, m = 20;
a cautious mask adds a reduction pass reading g and the sign source = 8); ``goal`` the target of issue 19 (within
1.15× of the floor); ``BW frac`` the rule's minimum traffic at the probe's bandwidth ÷ its measured step: the
fraction of the measured bandwidth the step reaches. ``first step s``: the first ``step()`` in a fresh process (dynamo
traces, inductor compiles) with an empty inductor cache (cold: it includes inductor's one-time probe of the CPU's
vector instruction sets, which ``research_optim.optim.cpu_probe`` runs side by side), with only that probe cached
(``new rule``: the first compile of this rule on a machine that has compiled before) and with the cold run's cache
(warm). Those fresh processes run on every core the benchmark started with, as a training run does, not pinned.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

import torch

from benchmarks.common import (
    PARAM_SETS, build_rotated, device_name, make_params, print_row, print_table, synchronize, time_round_robin,
    train_mode,
)
from research_optim.optim.adafactor import Adafactor
from research_optim.optim.adamw import AdamW, CautiousAdamW
from research_optim.optim.lion import CautiousLion, Lion
from research_optim.optim.schedule_free import AdamWScheduleFree, SGDScheduleFree
from research_optim.optim.sgd import SGD

Factory = Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]


def _timm(name: str, **kw) -> Factory:
    def build(params):
        from timm.optim import create_optimizer_v2
        return create_optimizer_v2(params, opt=name, **kw)
    return build


def _lion_pytorch(**kw) -> Factory:
    def build(params):
        from lion_pytorch import Lion as LionPytorch
        return LionPytorch(params, **kw)
    return build


def _schedulefree(name: str, **kw) -> Factory:
    def build(params):
        import schedulefree
        opt = getattr(schedulefree, name)(params, **kw)
        opt.train()
        return opt
    return build


@dataclass
class Rule:
    name: str
    bytes_per_param: int                      # minimum float32 traffic of the update, the cautious pass included
    goal: float | None                        # issue 19's target for default ×fused (None: no target)
    ours: Callable[..., torch.optim.Optimizer]  # (params, implementation) -> optimizer
    package: str                              # the reference package's step it is compared with
    reference: Factory


RULES = [
    Rule("lion", 20, 0.8, lambda ps, implementation: Lion(ps, weight_decay=0.1, implementation=implementation),
         "timm lion", _timm("lion", lr=1e-4, weight_decay=0.1)),
    Rule("lion (vs lion-pytorch)", 20, 0.8,
         lambda ps, implementation: Lion(ps, weight_decay=0.1, implementation=implementation),
         "lion_pytorch.Lion", _lion_pytorch(lr=1e-4, weight_decay=0.1)),
    Rule("c_lion", 28, 1.0,
         lambda ps, implementation: CautiousLion(ps, weight_decay=0.1, implementation=implementation),
         "timm clion", _timm("clion", lr=1e-4, weight_decay=0.1)),
    Rule("adamw (ours)", 28, 1.15, lambda ps, implementation: AdamW(ps, implementation=implementation),
         "torch AdamW foreach", lambda ps: torch.optim.AdamW(ps, lr=1e-3, foreach=True)),
    Rule("c_adamw", 36, 1.3, lambda ps, implementation: CautiousAdamW(ps, implementation=implementation),
         "timm cadamw", _timm("cadamw", lr=1e-3, weight_decay=0.01)),
    Rule("cautious sgd", 28, 1.15,
         lambda ps, implementation: SGD(ps, lr=0.1, weight_decay=1e-4, cautious="indicator_mean",
                                        implementation=implementation),
         "timm csgdw", _timm("csgdw", lr=0.1, momentum=0.9, weight_decay=1e-4)),
    Rule("sf_adamw", 28, 1.1, train_mode(AdamWScheduleFree), "schedulefree AdamWScheduleFree",
         _schedulefree("AdamWScheduleFree", lr=2.5e-3)),
    Rule("sf_sgd", 20, 0.8, train_mode(SGDScheduleFree), "schedulefree SGDScheduleFree",
         _schedulefree("SGDScheduleFree", lr=1.0)),
    # one path (reference = default): torch's arithmetic reads ‖p‖ and ‖U‖ on the host per tensor
    Rule("adafactor", 12, None, lambda ps, implementation: Adafactor(ps, implementation=implementation),
         "torch Adafactor", lambda ps: torch.optim.Adafactor(ps)),
]
RULES_BY_NAME = {rule.name: rule for rule in RULES}
YARDSTICK_BYTES = 28  # torch AdamW: read p, g, m, v; write p, m, v


# ----------------------------------------------------------------------------- first step, in a fresh process
def first_step_child(rule_name: str, set_name: str, device: torch.device) -> dict[str, float]:
    torch.set_grad_enabled(False)
    optimizer = RULES_BY_NAME[rule_name].ours(make_params(PARAM_SETS[set_name](), device), "auto")
    synchronize(device)
    start = time.perf_counter()
    optimizer.step()
    synchronize(device)
    return {"first": time.perf_counter() - start}


# the cores this process may use before it pins itself: the first-step processes run on them, as a run would
CORES = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None


def unpinned() -> None:
    if CORES is not None:
        os.sched_setaffinity(0, CORES)


def first_step_seconds(rule: Rule, set_name: str, device: torch.device, cache_dir: str) -> float:
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache_dir)
    out = subprocess.run([sys.executable, "-m", "benchmarks.step_time", "--child", rule.name, "--sets", set_name,
                          "--device", str(device)], env=env, capture_output=True, text=True, preexec_fn=unpinned)
    if out.returncode != 0:
        raise RuntimeError(f"the first-step process of {rule.name} on {set_name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["first"]


def first_steps(rule: Rule, set_name: str, device: torch.device) -> tuple[str, str, str]:
    """The first step's seconds in a fresh process: with an empty inductor cache (cold: a machine's first compile,
    which includes inductor's probe of the CPU's vector instruction sets, building a test library for each), with
    only that probe's results in the cache (a rule not compiled before, on a machine that has compiled something),
    and with the cache the cold run left (warm)."""
    with tempfile.TemporaryDirectory(prefix="inductor-cache-") as cache_dir, \
            tempfile.TemporaryDirectory(prefix="inductor-cache-") as probed_dir:
        cold, warm = (first_step_seconds(rule, set_name, device, cache_dir) for _ in range(2))
        subprocess.run([sys.executable, "-c", "from torch._inductor.cpu_vec_isa import pick_vec_isa; pick_vec_isa()"],
                       env=dict(os.environ, TORCHINDUCTOR_CACHE_DIR=probed_dir), check=True, capture_output=True)
        new_rule = first_step_seconds(rule, set_name, device, probed_dir)
        return f"{cold:.1f}", f"{new_rule:.1f}", f"{warm:.1f}"


# ----------------------------------------------------------------------------- steady steps, side by side
def measure(builders: dict[str, Callable[[], torch.optim.Optimizer]], floor_ratio: float, numel: int,
            device: torch.device, rounds: int, repeats: int) -> list[dict[str, float]]:
    """Seconds per call of every optimizer's step (``fused``, the yardstick, and ``default``, the rule's step, among
    them) and the probe's bandwidth (``a += b``: 12 bytes per element), round-robin, median of ``repeats`` per round.
    Every round builds the optimizers anew (parameters, gradients, state), in an order rotated by one from round to
    round (:func:`benchmarks.common.build_rotated`): a fixed order would favour the optimizers built later. A round
    in which the rule beat its own floor (``default`` ÷ ``fused`` below ``floor_ratio``: the yardstick was slowed
    down) is left out."""
    kept = []
    for r in range(rounds):
        built = build_rotated(builders, r)
        steps = {name: optimizer.step for name, optimizer in built.items()}
        # the probe last, where sets stepped fastest: its bandwidth divides BW frac, which then errs low, not high
        a, b = torch.randn(numel, device=device), torch.randn(numel, device=device)
        t = time_round_robin({**steps, "probe": lambda: a.add_(b)}, device, repeats, warmup=1)
        del built, steps, a, b
        t["bandwidth"] = 12 * numel / t.pop("probe")
        if t["default"] / t["fused"] >= floor_ratio:
            kept.append(t)
    return kept


def median_over(rounds: list[dict[str, float]], figure: Callable[[dict[str, float]], float]) -> str:
    """The median of ``figure`` over the kept rounds, two decimals; ``-`` when every round was discarded."""
    return f"{statistics.median(figure(t) for t in rounds):.2f}" if rounds else "-"


def bench_set(set_name: str, rules: list[Rule], device: torch.device, rounds: int, repeats: int,
              first_step: bool) -> None:
    shapes = PARAM_SETS[set_name]()
    numel = sum(int(torch.Size(s).numel()) for s in shapes)
    print(f"\n### {set_name}: {numel / 1e6:.1f}M parameters in {len(shapes)} tensors, {device_name(device)}\n")
    headers = ["optimizer", "default ×fused", "goal", "floor ×fused", "BW frac", "first step s cold", "new rule", "warm",
               "reference path ×fused", "reference package", "package ×fused", "rounds kept"]
    print_table(headers, [])  # rows follow as they are measured (a slow machine shows progress)
    yardstick = []
    for rule in rules:
        cold, new_rule, warm = first_steps(rule, set_name, device) if first_step else ("-", "-", "-")
        rule.ours(make_params(shapes, device), "auto").step()  # compiles (when it will) outside the timing
        builders = {"fused": lambda: torch.optim.AdamW(make_params(shapes, device), lr=1e-3, fused=True),
                    "default": lambda: rule.ours(make_params(shapes, device), "auto"),
                    "reference": lambda: rule.ours(make_params(shapes, device), "reference"),
                    "package": lambda: rule.reference(make_params(shapes, device))}
        kept = measure(builders, rule.bytes_per_param / YARDSTICK_BYTES, numel, device, rounds, repeats)
        yardstick += kept
        print_row([rule.name, median_over(kept, lambda t: t['default'] / t['fused']),
                   "-" if rule.goal is None else f"≤ {rule.goal}", f"{rule.bytes_per_param / YARDSTICK_BYTES:.2f}",
                   median_over(kept, lambda t: rule.bytes_per_param * numel / t['bandwidth'] / t['default']),
                   cold, new_rule, warm, median_over(kept, lambda t: t['reference'] / t['fused']),
                   rule.package,
                   median_over(kept, lambda t: t['package'] / t['fused']), f"{len(kept)}/{rounds}"])
    print_row(["torch AdamW fused", "1.00", "-", "1.00",
               median_over(yardstick, lambda t: YARDSTICK_BYTES * numel / t['bandwidth'] / t['fused']),
               "-", "-", "-", "-", "-", "-", "-"])
    print(f"\nprobe bandwidth (a += b, 12 bytes/element): "
          f"{median_over(yardstick, lambda t: t['bandwidth'] / 1e9)} GB/s, median over the kept rounds")


def pin(core: int | None) -> str:
    """Pin the process to one core (default: the last one it may use) with one torch thread; say which."""
    if not hasattr(os, "sched_setaffinity"):
        torch.set_num_threads(1)
        return "1 thread (no CPU affinity on this OS)"
    core = max(os.sched_getaffinity(0)) if core is None else core
    os.sched_setaffinity(0, {core})
    torch.set_num_threads(1)
    return f"pinned to core {core}, 1 thread"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=["vit_s", "gpt"], choices=sorted(PARAM_SETS))
    parser.add_argument("--rules", nargs="+", default=None, choices=sorted(RULES_BY_NAME), help="default: all")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=8,
                        help="a multiple of 4 builds each optimizer first equally often")
    parser.add_argument("--repeats", type=int, default=5, help="calls of each step per round")
    parser.add_argument("--core", type=int, default=None, help="the CPU core to pin to (default: the last one)")
    parser.add_argument("--no-first-step", dest="first_step", action="store_false",
                        help="skip the first-step columns (four fresh processes per rule and set)")
    parser.add_argument("--child", metavar="RULE", default=None,
                        help="only RULE's first step on the first of --sets, in this process, as JSON (the inductor "
                             "cache is TORCHINDUCTOR_CACHE_DIR's): what the first-step columns run")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.child:
        print(json.dumps(first_step_child(args.child, args.sets[0], device)))
        return
    torch.set_grad_enabled(False)
    placement = pin(args.core) if device.type == "cpu" else device_name(device)
    print(f"torch {torch.__version__}, {placement}; load average before: {load()}")
    rules = [r for r in RULES if args.rules is None or r.name in args.rules]
    for set_name in args.sets:
        bench_set(set_name, rules, device, args.rounds, args.repeats, args.first_step)
    print(f"\nload average after: {load()}")


if __name__ == "__main__":
    main()
