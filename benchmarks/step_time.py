"""Optimizer step time vs torch's fused AdamW and vs each rule's reference package, and the memory-traffic floor.

    python -m benchmarks.step_time                       # ViT-S and GPT parameter sets, CPU
    python -m benchmarks.step_time --sets vit_s --repeats 30 --device cuda

For every rule: the research_optim reference path, its default (``implementation="auto"``: compiled on these
sizes) and the public package's step are timed round-robin with torch ``AdamW(fused=True)`` on identical
parameters and gradients; ratios are medians taken in the same loop. ``bytes/param`` is the minimum traffic of
the rule's update in float32 (AdamW: read p, g, m, v, write p, m, v = 28), so ``floor ms`` = bytes · N / copy
bandwidth and ``BW frac`` = that floor / the measured default step: the fraction of the measured copy bandwidth
the step achieves. The first compiled step (compilation included; inductor's FX cache may be warm) is reported
separately; ``benchmarks/compile_cost.py`` measures it with a cold and a warm cache.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Callable

import torch

from benchmarks.common import (
    PARAM_SETS, copy_bandwidth, device_name, make_params, print_row, print_table, synchronize,
    time_round_robin, train_mode,
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
    bytes_per_param: int                      # minimum float32 traffic of the update (no caution)
    ours: Callable[..., torch.optim.Optimizer]  # (params, implementation) -> optimizer
    package: str                              # the reference package's step it is compared with
    reference: Factory


RULES = [
    Rule("lion", 20, lambda ps, implementation: Lion(ps, weight_decay=0.1, implementation=implementation),
         "timm lion", _timm("lion", lr=1e-4, weight_decay=0.1)),
    Rule("lion (vs lion-pytorch)", 20,
         lambda ps, implementation: Lion(ps, weight_decay=0.1, implementation=implementation),
         "lion_pytorch.Lion", _lion_pytorch(lr=1e-4, weight_decay=0.1)),
    Rule("c_lion", 20, lambda ps, implementation: CautiousLion(ps, weight_decay=0.1, implementation=implementation),
         "timm clion", _timm("clion", lr=1e-4, weight_decay=0.1)),
    Rule("adamw (ours)", 28, lambda ps, implementation: AdamW(ps, implementation=implementation),
         "torch AdamW foreach", lambda ps: torch.optim.AdamW(ps, lr=1e-3, foreach=True)),
    Rule("c_adamw", 28, lambda ps, implementation: CautiousAdamW(ps, implementation=implementation),
         "timm cadamw", _timm("cadamw", lr=1e-3, weight_decay=0.01)),
    Rule("cautious sgd", 20, lambda ps, implementation: SGD(ps, lr=0.1, weight_decay=1e-4, cautious="indicator_mean",
                                                              implementation=implementation),
         "timm csgdw", _timm("csgdw", lr=0.1, momentum=0.9, weight_decay=1e-4)),
    Rule("sf_adamw", 28, train_mode(AdamWScheduleFree), "schedulefree AdamWScheduleFree",
         _schedulefree("AdamWScheduleFree", lr=2.5e-3)),
    Rule("sf_sgd", 20, train_mode(SGDScheduleFree), "schedulefree SGDScheduleFree",
         _schedulefree("SGDScheduleFree", lr=1.0)),
    # one path (reference = default): torch's arithmetic reads ‖p‖ and ‖U‖ on the host per tensor
    Rule("adafactor", 12, lambda ps, implementation: Adafactor(ps, implementation=implementation),
         "torch Adafactor", lambda ps: torch.optim.Adafactor(ps)),
]


def first_step_seconds(opt: torch.optim.Optimizer, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    opt.step()
    synchronize(device)
    return time.perf_counter() - start


def bench_set(set_name: str, rules: list[Rule], device: torch.device, repeats: int, bandwidth: float) -> None:
    shapes = PARAM_SETS[set_name]()
    numel = sum(int(torch.Size(s).numel()) for s in shapes)
    print(f"\n### {set_name}: {numel / 1e6:.1f}M parameters in {len(shapes)} tensors, {device_name(device)}\n")
    fused_params = make_params(shapes, device)
    fused = torch.optim.AdamW(fused_params, lr=1e-3, fused=True)
    fused_ms = 28 * numel / bandwidth * 1e3
    headers = ["optimizer", "reference path ×fused", "default ms", "default ×fused", "reference package",
               "package ×fused", "bytes/param", "floor ms", "BW frac", "first step s", "default ×package"]
    print_table(headers, [])  # rows follow as they are measured (a slow machine shows progress)
    fused_times = []
    for rule in rules:
        reference = rule.ours(make_params(shapes, device), "reference")
        default = rule.ours(make_params(shapes, device), "auto")
        package = rule.reference(make_params(shapes, device))
        first = first_step_seconds(default, device)
        t = time_round_robin({"fused": fused.step, "reference": reference.step, "default": default.step,
                              "package": package.step}, device, repeats)
        fused_times.append(t["fused"])
        floor_ms = rule.bytes_per_param * numel / bandwidth * 1e3
        print_row([rule.name, f"{t['reference'] / t['fused']:.2f}", f"{t['default'] * 1e3:.1f}",
                   f"{t['default'] / t['fused']:.2f}", rule.package, f"{t['package'] / t['fused']:.2f}",
                   rule.bytes_per_param, f"{floor_ms:.2f}", f"{floor_ms / (t['default'] * 1e3):.2f}",
                   f"{first:.1f}", f"{t['default'] / t['package']:.2f}"])
        del reference, default, package
    fused_median = sorted(fused_times)[len(fused_times) // 2]
    print_row(["torch AdamW fused", "-", f"{fused_median * 1e3:.1f}", "1.00", "-", "-", 28, f"{fused_ms:.2f}",
               f"{fused_ms / (fused_median * 1e3):.2f}", "-", "-"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=["vit_s", "gpt"], choices=sorted(PARAM_SETS))
    parser.add_argument("--rules", nargs="+", default=None, help="rule names (default: all)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.set_grad_enabled(False)
    bandwidth = copy_bandwidth(device)
    print(f"copy bandwidth {bandwidth / 1e9:.1f} GB/s on {device_name(device)}; AdamW floor = 28 bytes/param")
    rules = [r for r in RULES if args.rules is None or r.name in args.rules]
    for set_name in args.sets:
        bench_set(set_name, rules, device, args.repeats, bandwidth)


if __name__ == "__main__":
    main()
