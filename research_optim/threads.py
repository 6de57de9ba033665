"""How many intra-op threads torch uses: the CPUs this process is allotted, and one for a tiny model.

torch's default — one thread per core of the machine — oversubscribes shared cores: every rank, every neighbour's
job and every test process spins its own team. Threads pay off only when each op has enough work to split; a tiny
model's ops are microseconds long, so it gets one thread. ``train.threads`` overrides the choice; the choice and the load average
are recorded in summary.json's environment.
"""
from __future__ import annotations

import os

# parameters × examples per rank per step (× tokens per example): below this, a step is a few ms of small ops.
TINY_WORK = 100_000_000


def cpu_allotment() -> tuple[int, str]:
    """The CPUs this process may use (affinity, SLURM's cpus-per-task, an OMP_NUM_THREADS cap), shared by the
    ranks torchrun starts on this node; with the reason."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    why = [f"affinity {cpus}"]
    for variable in ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS"):
        value = os.environ.get(variable, "")
        if value.isdigit() and int(value) > 0 and int(value) < cpus:
            cpus = int(value)
            why.append(f"{variable}={value}")
    ranks = os.environ.get("LOCAL_WORLD_SIZE", "1")  # torchrun: the ranks on this node share its allotment
    if ranks.isdigit() and int(ranks) > 1:
        cpus = max(1, cpus // int(ranks))
        why.append(f"{ranks} ranks per node")
    return cpus, ", ".join(why)


def choose_threads(requested: int | None, work: int) -> tuple[int, str]:
    """(threads, why): ``requested`` when set; else 1 for a tiny model (``work`` < TINY_WORK), else the allotment."""
    if requested is not None:
        return int(requested), "train.threads"
    cpus, why = cpu_allotment()
    allotted = f"{cpus} CPU{'s' if cpus != 1 else ''} allotted ({why})"
    if work < TINY_WORK:
        return 1, f"auto: tiny model (work {work:.1e} < {TINY_WORK:.0e}); {allotted}"
    return cpus, f"auto: {allotted}"


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
