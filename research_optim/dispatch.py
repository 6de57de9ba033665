"""Where a composed, validated run executes — decided by ``cluster.launcher``; nothing else changes.

* ``local``: this process;
* ``torchrun``: ``torchrun --standalone --nproc_per_node N -m research_optim.worker <run_dir>/config.yaml``
  (through ``torchrun_agent``, which ends in one line instead of torchrun's tracebacks);
* ``slurm``: a submitit job whose tasks each run ``worker.SlurmTask``: with ``rank_launcher=srun`` one task per
  rank (``nodes × tasks_per_node``, one per GPU, started by ``srun``); with ``rank_launcher=torchrun`` one task per
  node, which runs torchrun for the node's ranks (:func:`run_slurm_node`). Submission returns at once with the job
  id, log and run directory; every submission is appended to ``<run.root>/<run.group>/jobs.jsonl`` for
  ``python -m research_optim.jobs``.

We submit a picklable task ourselves instead of using hydra-submitit-launcher: the launcher blocks until every job
of a sweep ends, reports failed jobs as COMPLETED and has no hook for our step-boundary checkpoint on preemption.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from research_optim.lifecycle import outcome, recorded_outcome
from research_optim.run_dir import run_dir
from research_optim.tracking import SUMMARY_FILE


def absolute_root(cfg: DictConfig) -> DictConfig:
    """Jobs may start elsewhere: pin run.root to an absolute path (run.* is not part of the run identity)."""
    cfg = cfg.copy()
    cfg.run.root = str(Path(cfg.run.root).resolve())
    return cfg


def _summary_from_dir(directory: Path, written_since_ns: int = 0) -> dict[str, Any]:
    """The outcome the run's summary.json records; "failed" when none was written (since ``written_since_ns``)."""
    path = directory / SUMMARY_FILE
    if path.exists() and path.stat().st_mtime_ns >= written_since_ns:
        return recorded_outcome(directory)
    return outcome(directory, "failed", {}, "the run stopped before writing its summary (see the output above)")


def torchrun_command(config_path: Path, nproc_per_node: int, rendezvous: list[str]) -> list[str]:
    """torchrun (through ``torchrun_agent``) starting ``nproc_per_node`` ranks of ``worker`` on ``config_path``."""
    return [sys.executable, "-m", "research_optim.torchrun_agent", *rendezvous, f"--nproc_per_node={nproc_per_node}",
            "-m", "research_optim.worker", str(config_path)]


def run_agent(cmd: list[str], directory: Path, forward: tuple[signal.Signals, ...],
              env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a torchrun agent to its end, passing it the signals ``forward`` (it hands them to the ranks: they
    checkpoint and stop together), and return the summary its ranks wrote in ``directory``."""
    # torchrun would set OMP_NUM_THREADS=1 (and say so); the ranks choose their threads themselves (threads.py).
    env = {"OMP_NUM_THREADS": str(len(os.sched_getaffinity(0))), **os.environ, **(env or {})}
    started_ns = time.time_ns()
    proc = subprocess.Popen(cmd, env=env)
    previous = {s: signal.signal(s, lambda signum, frame: proc.send_signal(signum)) for s in forward}
    try:
        proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    # exit 0 without a new summary: the run had already completed; otherwise the ranks must have written one
    return _summary_from_dir(directory, written_since_ns=started_ns if proc.returncode else 0)


def run_torchrun(cfg: DictConfig) -> dict[str, Any]:
    cfg = absolute_root(cfg)
    directory = run_dir(cfg)
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / "config.yaml"
    config_path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    cmd = torchrun_command(config_path, cfg.cluster.nproc_per_node, ["--standalone"])
    return run_agent(cmd, directory, (signal.SIGTERM, signal.SIGINT))


def run_slurm_node(cfg: DictConfig) -> dict[str, Any]:
    """This node's part of a SLURM job with ``cluster.rank_launcher=torchrun``: torchrun starts the node's ranks,
    and the nodes meet by c10d rendezvous on the job's first node (which hosts its store; a port from the job id,
    so jobs sharing a host do not collide). SIGTERM and SIGUSR2 reach the agent even where SLURM signals only the
    task's own process (and replace submitit's handlers, which would requeue the job before the checkpoint); the
    agent passes them to the ranks and waits up to ``cluster.signal_delay_s`` for their checkpoint."""
    from research_optim.distributed import slurm_rendezvous
    from research_optim.topology import slurm_ranks_per_node

    directory = run_dir(cfg)
    config_path = directory / "slurm" / "torchrun_config.yaml"  # every node writes the same text, atomically
    temporary = config_path.with_name(f".{config_path.name}.{os.environ['SLURM_NODEID']}.{os.getpid()}")
    temporary.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    os.replace(temporary, config_path)
    host, port = slurm_rendezvous()
    first = os.environ["SLURM_NODEID"] == "0"
    rendezvous = [f"--nnodes={cfg.cluster.nodes}", "--rdzv_backend=c10d", f"--rdzv_endpoint={host}:{port}",
                  f"--rdzv_id={os.environ['SLURM_JOB_ID']}", f"--rdzv_conf=is_host={str(first).lower()}"]
    cmd = torchrun_command(config_path, slurm_ranks_per_node(cfg.cluster), rendezvous)
    shutdown = {"TORCH_ELASTIC_SHUTDOWN_TIMEOUT": str(max(30, int(cfg.cluster.signal_delay_s)))}
    return run_agent(cmd, directory, (signal.SIGTERM, signal.SIGUSR2), env=shutdown)


def slurm_executor(cfg: DictConfig, folder: Path, name: str | None = None):
    """A submitit executor for ``cluster`` (SLURM); jobs are named ``name`` (default: after the run directory)."""
    import submitit

    c = cfg.cluster
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(
        name=name or f"ro-{run_dir(cfg).name}", nodes=c.nodes, tasks_per_node=c.tasks_per_node,
        cpus_per_task=c.cpus_per_task, gpus_per_node=c.gpus_per_node or None, mem_gb=c.mem_gb,
        timeout_min=c.timeout_min, slurm_partition=c.partition, slurm_account=c.account, slurm_qos=c.qos,
        slurm_constraint=c.constraint, slurm_setup=list(c.setup), slurm_signal_delay_s=c.signal_delay_s,
        slurm_additional_parameters={"requeue": True, **OmegaConf.to_container(c.additional_parameters)},
    )
    return executor


def submit_slurm(cfg: DictConfig) -> dict[str, Any]:
    from research_optim.worker import SlurmTask

    cfg = absolute_root(cfg)
    directory = run_dir(cfg)
    directory.mkdir(parents=True, exist_ok=True)
    folder = directory / "slurm"
    job = slurm_executor(cfg, folder).submit(SlurmTask(OmegaConf.to_yaml(cfg, resolve=True)))
    record = {"job_id": job.job_id, "run_dir": str(directory), "folder": str(folder),
              "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr),
              "submitted": dt.datetime.now().isoformat(timespec="seconds"),
              "nodes": cfg.cluster.nodes, "tasks_per_node": cfg.cluster.tasks_per_node,
              "rank_launcher": cfg.cluster.get("rank_launcher", "srun")}
    jobs_file = directory.parent / "jobs.jsonl"
    with open(jobs_file, "a") as f:
        f.write(json.dumps(record) + "\n")
    print(f"submitted SLURM job {job.job_id}\n  run directory {directory}\n  log           {job.paths.stdout}\n"
          f"  status        python -m research_optim.jobs {directory.parent}", flush=True)
    if not cfg.cluster.wait:
        return {"status": "submitted", **record}
    try:
        job.results()  # every task; raises with the remote traceback if the job failed
    except Exception as err:  # noqa: BLE001 — reported, not hidden
        summary = _summary_from_dir(directory)
        if summary["status"] == "diverged":  # the job failed on purpose: the run says why
            return {**summary, "log": record["stdout"], **_job_ids(record)}
        return {"status": "failed", "error": f"{type(err).__name__}: {err}", "log": record["stdout"],
                **_job_ids(record)}
    return {**_summary_from_dir(directory), **_job_ids(record)}


def _job_ids(record: dict[str, Any]) -> dict[str, Any]:
    return {"job_id": record["job_id"], "run_dir": record["run_dir"]}


def launch(cfg: DictConfig) -> dict[str, Any]:
    """Run or submit ``cfg`` according to ``cfg.cluster.launcher``; returns a summary dict."""
    launcher = cfg.cluster.get("launcher", "local")
    if launcher == "torchrun":
        return run_torchrun(cfg)
    if launcher == "slurm":
        return submit_slurm(cfg)
    from research_optim.train import train

    return train(cfg)
