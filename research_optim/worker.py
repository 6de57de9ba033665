"""Entry points on the executing side: a torchrun process, or a SLURM task started by submitit.

Both receive the config composed and validated on the submitting host (compose once, run anywhere) and call the
same ``train``; ``distributed.detect`` tells them apart by their environment variables. A SLURM task of a job with
``cluster.rank_launcher=torchrun`` is a node, not a rank: it runs torchrun, whose ranks are torchrun processes.
"""
from __future__ import annotations

import os
import sys

from omegaconf import DictConfig, OmegaConf

from research_optim.errors import UserError

EXIT_PREEMPTED = 143  # 128 + SIGTERM, the shell's convention for "stopped by a signal"


def run_config(cfg: DictConfig) -> dict:
    from research_optim.train import train

    return train(cfg)


class RunDiverged(Exception):
    """Ends a SLURM task whose run diverged with an error, so its job reads FAILED, not COMPLETED."""


class RunFailed(Exception):
    """Ends a SLURM task whose torchrun ranks failed (they wrote why in summary.json), so its job reads FAILED."""


class SlurmTask:
    """The picklable callable submitit runs in every task of the job: a rank, or a node that runs torchrun."""

    def __init__(self, config_yaml: str) -> None:
        self.config_yaml = config_yaml

    def __call__(self) -> dict:
        cfg = OmegaConf.create(self.config_yaml)
        if cfg.cluster.get("rank_launcher", "srun") == "torchrun":
            from research_optim.dispatch import run_slurm_node

            summary = run_slurm_node(cfg)
        else:
            summary = run_config(cfg)  # an exception inside train() makes the job FAILED
        if summary["status"] == "preempted":
            # Requeued (or being killed by SLURM): leave no result, so submitit waits for the requeued job.
            raise SystemExit(0)
        if summary["status"] == "diverged":
            raise RunDiverged(summary["error"])
        if summary["status"] != "completed":
            raise RunFailed(summary["error"])
        return summary


def main(argv: list[str]) -> int:
    """``python -m research_optim.worker CONFIG.yaml`` — what torchrun starts on each rank."""
    if len(argv) != 2:
        print("usage: python -m research_optim.worker RESOLVED_CONFIG.yaml", file=sys.stderr)
        return 2
    try:
        summary = run_config(OmegaConf.load(argv[1]))
    except UserError as err:
        if os.environ.get("RANK", "0") == "0":  # every rank meets the same problem; one says so
            print(f"error: {err}", file=sys.stderr)
        return 2
    return {"completed": 0, "preempted": EXIT_PREEMPTED}.get(summary["status"], 1)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
