"""Shared fixtures: compose the real Hydra config tree and run it in-process on tiny settings.

Two tiers: ``python -m pytest`` runs everything (CI); ``python -m pytest -m "not slow"`` leaves out the tests marked
``slow`` — subprocesses, torchrun, the SLURM cluster, compilation, whole grids, and every test that trains a run
(marked here).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import warnings
from pathlib import Path
from typing import Any, Callable

import pytest
import datasets
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from research_optim.app import CONFIG_DIR

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("RESEARCH_OPTIM_COMPILE", "0")  # no compile cost in end-to-end tests; tests/optim/test_fast_* turn it on
os.environ.setdefault("PYTHONFAULTHANDLER", "1")  # a subprocess that crashes (SIGSEGV, SIGABRT) prints its Python stack
torch.set_num_threads(1)  # the CI machine has 2 cores; keep runs deterministic and cheap


@pytest.fixture(autouse=True)
def hub_offline(monkeypatch):
    """Never reach the Hugging Face hub (CI has no internet): local files only, whatever imported `datasets` first."""
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


@pytest.fixture(autouse=True)
def one_thread_again():
    """A Trainer sets the process's thread count for its model; the next test starts from one thread again."""
    yield
    torch.set_num_threads(1)

TINY = ["train.steps=40", "train.batch_size=16", "train.eval_every=20", "train.log_every=10",
        "train.checkpoint_every=20", "train.progress=false", "train.eval_batch_size=128"]


def compose_config(overrides: list[str] | tuple[str, ...] = (), config_name: str = "config") -> DictConfig:
    """The real config tree composed with ``overrides`` (``config_name="tune"``: the tune command's)."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return compose(config_name=config_name, overrides=list(overrides))


def free_port() -> int:
    """A TCP port free on this host now, for a process group's rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gloo_rank(rank: int, world: int, port: int, worker: Callable[..., Any], args: tuple, results: dict) -> None:
    import torch.distributed as dist

    from research_optim import distributed

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        results[rank] = worker(rank, *args)
    finally:
        distributed.teardown()  # as a run leaves its group


def _rank_logging_stderr(rank: int, log: str, worker: Callable[..., Any], *args: Any) -> Any:
    """``worker(rank, *args)`` with this process's stderr (fd 2: Python's and C's, a crash's stack) also kept in
    ``log``."""
    import faulthandler
    import subprocess as sp

    tee = sp.Popen(["tee", "-a", log], stdin=sp.PIPE, stdout=os.dup(2))
    os.dup2(tee.stdin.fileno(), 2)
    faulthandler.enable()  # on the new fd 2
    return worker(rank, *args)


def spawn_ranks(worker: Callable[..., Any], args_of: Callable[[int], tuple], nprocs: int = 2) -> tuple:
    """``torch.multiprocessing.spawn(worker, args_of(attempt), nprocs)``; the args of the attempt that completed.

    Once more (attempt 1, with its own args: fresh ports and directories) when a process died of a signal: on this
    CPU, workers under FSDP2 aborted a few times in ~25 runs of ``test_fsdp.py`` ("malloc(): unaligned tcache chunk
    detected", in different tests, never reproduced alone), and twice in a row in one CI run, at exit ("terminate
    called without an active exception"). DTensor's caches kept the gloo group and its threads alive into the
    interpreter's shutdown; ``distributed.teardown`` now frees them with the run. A worker that raises
    (an assertion, a wrong result) or crashes twice fails the test; the retry is reported as a warning that ends with
    the ranks' last lines of stderr (the crash's Python stack, from faulthandler)."""
    import tempfile

    import torch.multiprocessing as mp

    args = args_of(0)
    with tempfile.TemporaryDirectory() as logs:
        try:
            mp.spawn(_rank_logging_stderr, args=(f"{logs}/stderr", worker, *args), nprocs=nprocs, join=True)
            return args
        except mp.ProcessExitedException as err:
            if err.signal_name is None:
                raise
            tail = Path(logs, "stderr").read_text(errors="replace")[-3000:]
            warnings.warn(f"{worker.__name__}: a spawned process died ({err}); running the ranks once more. "
                          f"Its stderr ended with:\n{tail}")
    args = args_of(1)
    mp.spawn(worker, args=args, nprocs=nprocs, join=True)  # a crash now fails the test (PYTHONFAULTHANDLER: its stack)
    return args


def on_gloo_ranks(worker: Callable[..., Any], *args: Any, world: int = 2) -> dict[int, Any]:
    """``worker(rank, *args)`` on ``world`` spawned processes joined in one gloo process group; what each returned,
    by rank. ``worker`` is a module-level function (spawned processes import it)."""
    import torch.multiprocessing as mp

    results = mp.Manager().dict()
    spawn_ranks(_gloo_rank, lambda attempt: (world, free_port(), worker, args, results), nprocs=world)
    return dict(results)


def read_metrics(run_dir: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(run_dir, "metrics.jsonl").read_text().splitlines()]


def without_measurements(records: list[dict]) -> list[dict]:
    """Metrics lines without the measurements of the machine (times, throughput, memory): what two runs of one
    config must agree on."""
    from research_optim.throughput import MEASURED_KEYS

    return [{k: v for k, v in r.items() if k not in MEASURED_KEYS} for r in records]


def pytest_collection_modifyitems(items):
    """A test that trains a run (through ``tiny_run`` or ``tiny_trainer``) is end-to-end: it belongs to the full
    suite, not to the fast tier (``pytest -m "not slow"``)."""
    for item in items:
        if {"tiny_run", "tiny_trainer"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def tiny_run(tmp_path):
    """``tiny_run(*overrides)`` composes the real config with tiny settings under tmp_path and trains it."""
    from research_optim.app import run

    def _run(*overrides: str, root: Path | None = None) -> dict:
        cfg = compose_config([*TINY, f"run.root={root or tmp_path / 'runs'}", *overrides])
        return run(cfg)

    return _run


@pytest.fixture
def tiny_trainer(tmp_path):
    """``tiny_trainer(*overrides)`` → (trainer, summary): like tiny_run, but keeps the Trainer to inspect."""
    from research_optim import distributed
    from research_optim.config_checks import validate
    from research_optim.train import Trainer

    def _run(*overrides: str, root: Path | None = None):
        cfg = compose_config([*TINY, f"run.root={root or tmp_path / 'runs'}", *overrides])
        validate(cfg)
        trainer = Trainer(cfg, distributed.setup("cpu"))
        return trainer, trainer.run()

    return _run




def toy_optimizer(cls: str) -> list[str]:
    """Overrides that replace the optimizer by one of tests/toy_optimizers.py."""
    return ["optimizer=sgd", "~optimizer.momentum", "~optimizer.nesterov", "~optimizer.weight_decay",
            f"optimizer._target_=tests.toy_optimizers.{cls}", f"optimizer.name=toy_{cls.lower()}", "optimizer.lr=0.05"]


# ----------------------------------------------------------------------------- the local SLURM cluster
def _sinfo_partitions() -> tuple[set[str] | None, str]:
    """Partitions the cluster reports, or None and why it cannot be used."""
    if shutil.which("sinfo") is None:
        return None, "sinfo not found: no SLURM client installed (start one with: bash launch/local_slurm.sh start)"
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return None, "sinfo timed out: no SLURM controller answers (bash launch/local_slurm.sh start)"
    if proc.returncode != 0:
        reason = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        return None, f"sinfo failed ({reason[0]}): start the cluster with bash launch/local_slurm.sh start"
    return {name.rstrip("*") for name in proc.stdout.split()}, ""


@pytest.fixture(scope="module")
def partitions() -> set[str]:
    found, reason = _sinfo_partitions()
    if found is None:
        # CI, which starts the cluster first, sets this so that a broken cluster fails instead of skipping.
        if os.environ.get("RESEARCH_OPTIM_REQUIRE_SLURM") == "1":
            pytest.fail(f"RESEARCH_OPTIM_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)
    return found


