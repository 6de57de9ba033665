"""``python -m research_optim.tune``: compose like the main app, check at the door, then work here or on SLURM.

Here (``cluster=local`` or ``torchrun``) this process is a worker: it runs trials one after another, then selects
and confirms; start the same command in another shell and the two share the study. With ``cluster=slurm`` it
submits ``tune.workers`` jobs of one process each that pull trials from the study in parallel, and returns (or,
with ``cluster.wait=true``, waits and prints the outcome). Exit codes: 0 done (or submitted), 1 a trial failed or
a confirmation run did not complete, 2 refused at the door, 143 preempted (run the same command to resume).
"""
from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from research_optim.app import CONFIG_DIR, end_point, exit_sweep, refusal, sweep_point
from research_optim.errors import UserError
from research_optim.tune.plan import Plan
from research_optim.tune.protocol import Stopped, outcome, work

EXIT_PREEMPTED = 143


class TuneWorker:
    """The picklable callable each SLURM worker job runs: the protocol of a local worker, in the job's process."""

    def __init__(self, config_yaml: str) -> None:
        self.config_yaml = config_yaml

    def __call__(self) -> int:
        plan = Plan.from_config(OmegaConf.create(self.config_yaml))
        try:
            code = work(plan, in_this_process=True)
        except Stopped:
            raise SystemExit(0) from None  # requeued: the requeued job takes its trial over (leave no result)
        if code:
            raise RuntimeError("the study did not complete cleanly (see the outcome above)")
        return code


def submit_workers(plan: Plan) -> int:
    from research_optim.dispatch import slurm_executor

    study = plan.study
    executor = slurm_executor(plan.base, study.folder / f"{study.name}.slurm", name=f"ro-tune-{study.name}")
    worker = TuneWorker(OmegaConf.to_yaml(plan.worker_config(), resolve=True))
    jobs = [executor.submit(worker) for _ in range(plan.workers)]
    print(f"{study.progress(plan.budget)}\nsubmitted {len(jobs)} SLURM worker jobs: {' '.join(job.job_id for job in jobs)}\n"
          f"  logs  {jobs[0].paths.stdout.parent}", flush=True)
    if not plan.base.cluster.wait:
        return 0
    for job in jobs:
        try:
            job.results()
        except Exception as err:  # noqa: BLE001 — reported with the outcome, never hidden
            print(f"worker job {job.job_id} failed: {type(err).__name__}: {str(err).splitlines()[0]}\n"
                  f"  log {job.paths.stdout}", file=sys.stderr)
    lines, code = outcome(plan)
    print("\n".join(lines))
    return code


def tune(cfg: DictConfig) -> int:
    plan = Plan.from_config(cfg)
    if plan.dry_run:
        print(plan.describe(), flush=True)
        return 0
    if plan.base.cluster.launcher == "slurm":
        return submit_workers(plan)
    return work(plan)


_sweep_failures: list[str] = []  # multirun (one study per point): the studies that did not complete


@hydra.main(version_base=None, config_path=CONFIG_DIR, config_name="tune")
def main(cfg: DictConfig) -> None:
    point = sweep_point()
    try:
        code = tune(cfg)
    except UserError as err:
        print(refusal(err, point), file=sys.stderr)
        code = 2
    except Stopped as stop:
        print(f"{stop}; run the same command again to resume", file=sys.stderr)
        code = EXIT_PREEMPTED
    end_point(code, point, _sweep_failures)


def cli() -> None:
    main()
    exit_sweep(_sweep_failures, "study(ies)")
