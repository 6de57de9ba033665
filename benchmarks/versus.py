"""This checkout's optimizer steps against another commit's, side by side in one process.

    python -m benchmarks.versus 68dbb6b                     # every step_time rule, ViT-S parameter set
    python -m benchmarks.versus HEAD~1 --rules lion c_lion --sets vit_s gpt --rounds 12

A change to a step moves it by a few percent, while this VM's memory streams up to 2× faster on one day than on
another: two ``step_time`` tables of different days cannot show the change. Here the other commit's
``research_optim`` and ``benchmarks`` packages are extracted (``git archive``) into a temporary directory under
other names (``research_optim_base``, ``benchmarks_base``: every whole-word mention renamed), so that both import in
one process; each rule is built by each commit's own ``benchmarks/step_time.py`` (``implementation="auto"``) and
compiled before the timing. Every round builds this commit's step, the base commit's and torch
``AdamW(fused=True)`` anew in a rotated order and times them interleaved, pinned to one core with one thread
(``step_time``'s measuring rule). Printed per rule: the median over the rounds of this ÷ base, and of each ×
fused AdamW, with the load average before and after. A rule the base commit does not have is skipped.
Run against ``HEAD`` it reads 1.005–1.03, not 1.00 (2026-12-02, cause not found): compare a change with that.
"""
from __future__ import annotations

import argparse
import importlib
import io
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import torch

from benchmarks.common import (
    PARAM_SETS, build_rotated, device_name, make_params, print_row, print_table, time_round_robin,
)
from benchmarks.step_time import RULES, RULES_BY_NAME, load, pin

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("research_optim", "benchmarks")


def extract(rev: str, into: Path) -> str:
    """``rev``'s packages under ``into`` as ``<name>_base``; returns the commit's short hash."""
    def git(*args: str) -> bytes:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True)
        if done.returncode != 0:
            sys.exit(f"benchmarks.versus: git {' '.join(args)} failed: {done.stderr.decode().strip()}")
        return done.stdout

    commit = git("rev-parse", "--short", f"{rev}^{{commit}}").decode().strip()
    with tarfile.open(fileobj=io.BytesIO(git("archive", commit, *PACKAGES))) as archive:
        archive.extractall(into, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    renamed = re.compile(rf"\b({'|'.join(PACKAGES)})\b")
    for name in PACKAGES:
        (into / name).rename(into / f"{name}_base")
        for path in (into / f"{name}_base").rglob("*.py"):
            path.write_text(renamed.sub(r"\1_base", path.read_text()))
    return commit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", help="the commit to compare with (a hash, a tag, HEAD~1, ...)")
    parser.add_argument("--sets", nargs="+", default=["vit_s"], choices=sorted(PARAM_SETS))
    parser.add_argument("--rules", nargs="+", default=None, choices=sorted(RULES_BY_NAME), help="default: all")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=12, help="a multiple of 3 builds each step first equally often")
    parser.add_argument("--repeats", type=int, default=5, help="calls of each step per round")
    parser.add_argument("--core", type=int, default=None, help="the CPU core to pin to (default: the last one)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory(prefix="versus-") as tmp:
        commit = extract(args.base, Path(tmp))
        sys.path.insert(0, tmp)
        base_rules = importlib.import_module("benchmarks_base.step_time").RULES_BY_NAME
        placement = pin(args.core) if device.type == "cpu" else device_name(device)
        print(f"this checkout against {commit}; torch {torch.__version__}, {placement}; load average before: {load()}")
        for set_name in args.sets:
            shapes = PARAM_SETS[set_name]()
            print(f"\n### {set_name}: {len(shapes)} tensors, {device_name(device)}\n")
            print_table(["optimizer", "this ÷ base", "this ×fused", "base ×fused", "rounds"], [])
            for rule in [r for r in RULES if args.rules is None or r.name in args.rules]:
                if rule.name not in base_rules:
                    print_row([rule.name, f"not in {commit}", "-", "-", "-"])
                    continue
                builders = {"fused": lambda: torch.optim.AdamW(make_params(shapes, device), lr=1e-3, fused=True),
                            "this": lambda: rule.ours(make_params(shapes, device), "auto"),
                            "base": lambda: base_rules[rule.name].ours(make_params(shapes, device), "auto")}
                for name in ("this", "base"):  # compiles (where it will) outside the timing
                    builders[name]().step()
                rounds = []
                for r in range(args.rounds):
                    built = build_rotated(builders, r)
                    rounds.append(time_round_robin({k: o.step for k, o in built.items()}, device, args.repeats,
                                                   warmup=1))
                    del built

                def median(a: str, b: str) -> str:
                    return f"{statistics.median(t[a] / t[b] for t in rounds):.3f}"

                print_row([rule.name, median("this", "base"), median("this", "fused"), median("base", "fused"),
                           args.rounds])
    print(f"\nload average after: {load()}")


if __name__ == "__main__":
    main()
