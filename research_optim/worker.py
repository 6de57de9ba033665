"""Entry points on the executing side: a torchrun process, or a SLURM task started by submitit.

Both receive the config composed and validated on the submitting host (compose once, run anywhere) and call the
same ``train``; ``distributed.detect`` tells them apart by their environment variables.
"""
from __future__ import annotations

import os
import sys

from omegaconf import DictConfig, OmegaConf

EXIT_PREEMPTED = 143  # 128 + SIGTERM, the shell's convention for "stopped by a signal"


def _threads() -> None:
    """One process per core share: SLURM tells us our CPUs; torchrun sets OMP_NUM_THREADS itself."""
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if cpus:
        import torch

        torch.set_num_threads(int(cpus))


def run_config(cfg: DictConfig) -> dict:
    from research_optim.train import train

    _threads()
    return train(cfg)


class SlurmTask:
    """The picklable callable submitit runs in every task of the job."""

    def __init__(self, config_yaml: str) -> None:
        self.config_yaml = config_yaml

    def __call__(self) -> dict:
        summary = run_config(OmegaConf.create(self.config_yaml))
        if summary["status"] == "preempted":
            # Requeued (or being killed by SLURM): leave no result, so submitit waits for the requeued job.
            raise SystemExit(0)
        return summary  # completed or diverged; an exception inside train() makes the job FAILED


def main(argv: list[str]) -> int:
    """``python -m research_optim.worker CONFIG.yaml`` — what torchrun starts on each rank."""
    if len(argv) != 2:
        print("usage: python -m research_optim.worker RESOLVED_CONFIG.yaml", file=sys.stderr)
        return 2
    summary = run_config(OmegaConf.load(argv[1]))
    return {"completed": 0, "preempted": EXIT_PREEMPTED}.get(summary["status"], 1)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
