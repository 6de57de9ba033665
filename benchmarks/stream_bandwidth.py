"""How fast one core streams memory with different mixes of reads and writes: the floor a two-pass step meets.

    taskset -c 1 env OMP_NUM_THREADS=1 python -m benchmarks.stream_bandwidth

A cautious rule counts its mask over the whole tensor (reading g and the sign source) before it writes the update,
so its floor is a read-only pass plus its base rule's update. Byte counts alone price every byte alike; on one CPU
core a read-only pass streams slower than a pass that reads and writes several arrays. Each row is timed
round-robin with the others (medians over ``--rounds`` rounds of ``--repeats`` calls) on float32 arrays of
``--numel`` elements, and reports its bytes moved per element, GB/s, and its time as a fraction of fused AdamW's
(28 bytes per element) on the same elements — the ``floor ×fused`` column of ``step_time`` at this bandwidth.
"""
from __future__ import annotations

import argparse
import statistics

import torch

from benchmarks.common import make_params, print_table, time_round_robin


def count_aligned(m: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """A cautious mask's counting pass: the coordinates where m and g agree in sign."""
    return ((m * g) > 0).sum(dtype=torch.int32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--numel", type=int, default=16_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    n, device = args.numel, torch.device("cpu")
    a, b, c = (torch.randn(n) for _ in range(3))
    count = torch.compile(count_aligned, dynamic=True)
    fused = torch.optim.AdamW(make_params([(n,)], device), lr=1e-3, fused=True)
    rows = {  # name: (callable, bytes per element)
        "read 2 (torch.dot)": (lambda: torch.dot(a, b), 8),
        "read 2 (compiled mask count)": (lambda: count(a, b), 8),
        "read 1, write 1 (copy_)": (lambda: c.copy_(a), 8),
        "read 2, write 1 (a += b)": (lambda: a.add_(b), 12),
        "read 4, write 3 (fused AdamW)": (fused.step, 28),
    }
    rounds = [time_round_robin({name: fn for name, (fn, _) in rows.items()}, device, args.repeats)
              for _ in range(args.rounds)]
    seconds = {name: statistics.median(r[name] for r in rounds) for name in rows}
    table = [[name, nbytes, f"{nbytes * n / seconds[name] / 1e9:.1f}",
              f"{seconds[name] / seconds['read 4, write 3 (fused AdamW)']:.2f}"]
             for name, (_, nbytes) in rows.items()]
    print(f"{n:,} float32 elements, {torch.get_num_threads()} thread(s)\n")
    print_table(["pass", "bytes/element", "GB/s", "time ×fused AdamW"], table)


if __name__ == "__main__":
    main()
