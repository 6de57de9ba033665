"""``benchmarks/step_time.py``, ``benchmarks/compiled_calls.py``, ``benchmarks/small_tensors.py`` and
``benchmarks/versus.py`` (the README's step-time tables) run on small tensors and print a ratio for every row; the
rotation that builds each optimizer first equally often."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.common import build_rotated

pytestmark = pytest.mark.slow  # builds every optimizer of the table, each round


def _table(args: list[str]) -> list[list[str]]:
    done = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in done.stdout.splitlines()
            if line.startswith("| ") and "---" not in line]
    return rows[1:]


def test_step_time_gives_every_rule_a_ratio_to_fused_adamw():
    from benchmarks.step_time import RULES

    rows = _table(["benchmarks.step_time", "--sets", "smoke", "--no-first-step", "--rounds", "2", "--repeats", "1"])
    assert [row[0] for row in rows] == [rule.name for rule in RULES] + ["torch AdamW fused"]
    for row in rows[:-1]:  # on tiny tensors a round may be discarded (the rule beat its floor): never "nan"
        kept, rounds = map(int, row[-1].split("/"))
        assert rounds == 2 and all(float(row[i]) > 0 if kept else row[i] == "-" for i in (1, 4, 8, 10)), row


def test_compiled_calls_gives_every_split_a_ratio_and_a_cost_per_call():
    rows = _table(["benchmarks.compiled_calls", "--numel", "20000", "--tensors", "1", "4", "--rounds", "3",
                   "--repeats", "1"])
    assert [row[0] for row in rows] == ["1", "4"]
    assert all(float(row[3]) > 0 and float(row[4]) > 0 for row in rows) and rows[0][6] == "-"
    assert rows[1][6].lstrip("-").isdigit()  # µs per call against the first row (negative when a split is faster)


def test_versus_times_this_checkout_against_another_commit_in_one_process():
    rows = _table(["benchmarks.versus", "HEAD", "--sets", "smoke", "--rules", "lion", "sf_sgd", "--rounds", "3",
                   "--repeats", "1"])
    assert [row[0] for row in rows] == ["lion", "sf_sgd"]
    assert all(float(cell) > 0 for row in rows for cell in row[1:4]) and all(row[4] == "3" for row in rows)


def test_versus_refuses_a_commit_that_does_not_exist_in_one_line():
    done = subprocess.run([sys.executable, "-m", "benchmarks.versus", "no-such-commit", "--sets", "smoke"],
                          capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert done.returncode != 0 and "no-such-commit" in done.stderr and "Traceback" not in done.stderr


def test_small_tensors_times_every_variant_of_both_rules():
    rows = _table(["benchmarks.small_tensors", "--sets", "smoke", "--rules", "lion", "sf_sgd", "--below", "100",
                   "--rounds", "3", "--repeats", "1"])
    assert [row[2] for row in rows] == ["lion", "sf_sgd"]
    assert all(float(cell) > 0 for row in rows for cell in row[3:6])


def test_small_tensors_variants_run_in_the_order_they_name(monkeypatch):
    """The benchmark's variants do what their columns say: the small tensors on the foreach path, stepped before the
    compiled calls (as ``compiled_each`` does) or after them."""
    from benchmarks import small_tensors
    from research_optim.optim import Lion, compiled
    from research_optim.optim.implementation import set_compile_enabled

    events = []
    run_all, foreach_add_ = compiled.run_all, torch._foreach_add_
    monkeypatch.setattr(compiled, "run_all", lambda calls: events.append(
        [max(x.numel() for x in inputs if isinstance(x, torch.Tensor)) for _, inputs in calls]) or run_all(calls))
    monkeypatch.setattr(torch, "_foreach_add_", lambda *a, **k: events.append("foreach") or foreach_add_(*a, **k))
    variants = [[], small_tensors.small_on_foreach(100),
                small_tensors.small_on_foreach(100) + small_tensors.eager_after()]
    steps = []
    set_compile_enabled(True)
    try:
        for patches in variants:
            params = [torch.nn.Parameter(torch.ones(n)) for n in (300, 20, 500)]
            for p in params:
                p.grad = torch.ones_like(p)
            optimizer = small_tensors.Patched(Lion(params, implementation="compiled"), patches)
            optimizer.step()  # a kind's first call goes through dynamo, the later ones through run_all
            events.clear()
            optimizer.step()
            steps.append(list(events))
    finally:
        set_compile_enabled(None)
    assert steps == [[[300, 20, 500]], ["foreach", [300, 500]], [[300, 500], "foreach"]]


def test_each_round_builds_the_optimizers_starting_one_further():
    order: list[str] = []
    builders = {name: (lambda name=name: order.append(name) or name.upper()) for name in "abc"}
    for r in range(4):
        assert list(build_rotated(builders, r).items()) == [("a", "A"), ("b", "B"), ("c", "C")]  # builders' order
    assert order == list("abc" "bca" "cab" "abc")


def test_a_round_in_which_the_rule_beats_its_floor_is_discarded_and_none_kept_prints_a_dash():
    from benchmarks.step_time import measure, median_over

    def builders():
        return {name: (lambda: torch.optim.SGD([torch.zeros(64, requires_grad=True)], lr=0.1))
                for name in ("fused", "default")}
    cpu = torch.device("cpu")
    assert len(measure(builders(), 0.0, 64, cpu, rounds=2, repeats=1)) == 2  # no ratio is below 0
    assert measure(builders(), float("inf"), 64, cpu, rounds=2, repeats=1) == []  # every ratio is below ∞
    assert median_over([], lambda t: t["default"]) == "-" and median_over([{"x": 0.5}], lambda t: t["x"]) == "0.50"
