"""Inductor's one-time probe of the CPU's vector instruction sets, run side by side and early.

Before inductor compiles its first C++ kernel in a process with an empty cache (``TORCHINDUCTOR_CACHE_DIR``: a
freshly booted machine, a SLURM node with an empty /tmp), it checks every ISA the CPU reports (x86: AMX, AVX-512
VNNI, AVX-512, AVX2) by building and loading a test library with that ISA's flags, one ISA after another: most of a
cold first step. The checks are independent, so :func:`start` runs them in threads, one per core the process may use
(none on one core) — the builds are subprocesses and run side by side — and as soon as it is called, so that they
also overlap whatever the caller does next (dynamo's tracing; in a training run, the data and the first forward and
backward): a cold ViT-S first step from 12.5–13.3 s to 7.7–7.8 s on 2 cores (``benchmarks/README.md``). Their
results land in inductor's own caches (each ISA object's ``__bool__``, the built libraries on disk), which inductor
then reads as if it had probed itself: what it picks does not change.

An ISA's check changes that ISA object's compiler flags while it runs, so no compilation may start before the
checks are over: :func:`wait` joins them (``optim.compiled`` calls it before inductor compiles a graph), and a
process that compiles through torch's own backend meanwhile (``torch.compile(model)``) must not start them early.
"""
from __future__ import annotations

import os
import queue
import threading

__all__ = ["start", "wait"]

_threads: list[threading.Thread] = []
_started = False
_lock = threading.Lock()


def _candidates() -> list[object]:
    """The ISA objects inductor's ``valid_vec_isa_list`` would check on this machine, not yet checked; empty where it
    checks nothing (not x86, checks switched off, done already)."""
    try:
        from torch._inductor import config, cpu_vec_isa
    except ImportError:  # another version of torch: inductor probes as it always does
        return []
    if (not hasattr(cpu_vec_isa, "x86_isa_checker") or config.cpp.vec_isa_ok is not None or config.is_fbcode()
            or cpu_vec_isa.valid_vec_isa_list.cache_info().currsize):
        return []
    flags = cpu_vec_isa.x86_isa_checker()  # empty on a CPU that is not x86
    return [isa for isa in cpu_vec_isa.supported_vec_isa_list if all(f in flags for f in str(isa).split())]


def _check_all(pending: queue.SimpleQueue) -> None:
    while True:
        try:
            isa = pending.get_nowait()
        except queue.Empty:
            return
        try:
            bool(isa)  # cached by inductor, with the library it built
        except Exception:  # left to inductor, which checks again and reports it its way
            pass


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def start() -> None:
    """Start the checks in daemon threads (a process that exits first does not wait for them), as many as the process
    has cores, the slowest ISA (inductor lists the widest first) first; once per process. A process with one core
    starts none and leaves the checks to inductor: there, a thread per ISA made a cold first step 1.7 s slower than
    inductor's own probe (3dda0a2's commit message), and one thread 0.2–0.5 s (benchmarks/README.md)."""
    global _started
    with _lock:
        if _started:
            return
        _started = True
        pending: queue.SimpleQueue = queue.SimpleQueue()
        candidates = _candidates() if _cores() > 1 else []
        for isa in candidates:
            pending.put(isa)
        _threads.extend(threading.Thread(target=_check_all, args=(pending,), name="research_optim cpu probe",
                                         daemon=True) for _ in range(min(len(candidates), _cores())))
        for thread in _threads:
            thread.start()


def wait() -> None:
    """Return once the checks :func:`start` began are over (at once if it began none)."""
    with _lock:
        threads = list(_threads)
    for thread in threads:
        thread.join()
