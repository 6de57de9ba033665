"""The Hydra application: compose → validate → check the door → run (the cluster group decides where).

Expected failures (:class:`~research_optim.errors.UserError`: a bad value, a file in the way, a run already in
progress, a damaged checkpoint) print one or two lines and exit with code 2; anything else keeps its traceback.
"""
from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from research_optim.config_checks import validate
from research_optim.errors import UserError

# conf/ sits beside the package (editable install); an absolute path works for `python -m` and the script alike.
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def run(cfg: DictConfig, in_this_process: bool = False) -> dict:
    """Validate ``cfg`` and its surroundings, then run it where ``cluster`` says (here, torchrun, SLURM) — or in
    this process whatever it says (``in_this_process``: a SLURM job's own process running a tuning trial); returns
    the run's summary. ``train.device=auto`` is resolved here, on the submitting host: it is part of the run id."""
    validate(cfg)
    from research_optim.dispatch import launch  # imported late: `--help` and config errors stay fast
    from research_optim.preflight import preflight
    from research_optim.topology import with_resolved_device

    cfg = with_resolved_device(cfg)
    preflight(cfg)
    if in_this_process:
        from research_optim.train import train

        return train(cfg)
    return launch(cfg)


def print_summary(summary: dict) -> None:
    if summary.get("status") == "submitted":
        return  # the dispatcher printed the job id, log and run directory
    if summary.get("status") == "preempted":
        print(f"\nrun preempted at step {summary.get('step')}, checkpoint written"
              f"{' and SLURM job requeued' if summary.get('requeued') else ''}; run the same command again to resume."
              f"\nrun directory: {summary.get('run_dir')}")
        return
    if summary.get("status") != "completed":
        print(f"\nrun {summary.get('status')}: {summary.get('error')}\nrun directory: {summary.get('run_dir')}")
        return
    lines = [
        f"final train loss   {summary['train_loss']:.4f}   (accuracy {summary['train_accuracy']:.4f})",
        f"final val loss     {summary['val_loss']:.4f}   (accuracy {summary['val_accuracy']:.4f})",
    ]
    if "val_gap_to_optimum" in summary:
        lines.append(f"gap to the optimum {summary['val_gap_to_optimum']:.4f} nats")
    if "test_loss" in summary:
        lines.append(f"final test loss    {summary['test_loss']:.4f}   (accuracy {summary['test_accuracy']:.4f}; "
                     "reported apart, never used for selection)")
    lines += [
        f"steps              {summary['step']}   ({summary['steps_per_s']:.1f} steps/s, "
        f"train {summary['train_time']:.1f} s, eval {summary['eval_time']:.1f} s)",
        f"run directory      {summary['run_dir']}",
    ]
    print("\n" + "\n".join(lines))


def sweep_point() -> str | None:
    """The overrides of this point of a sweep (``-m``), or None for a single run."""
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return " ".join(HydraConfig.get().overrides.task)


def refusal(err: UserError, point: str | None) -> str:
    return f"error{f' in sweep point [{point}]' if point is not None else ''}: {err}"


def end_point(code: int, point: str | None, failures: list[str]) -> None:
    """A single run exits with ``code`` at once; a sweep point that failed is remembered and the sweep goes on."""
    if code and point is None:
        sys.exit(code)
    if code:
        failures.append(point)


def exit_sweep(failures: list[str], what: str) -> None:
    """After every point was tried: exit code 1 when any did not complete. The list is emptied: a process may run
    the command again (experiments/in_process.py), and its sweep starts with no failures."""
    failed, failures[:] = list(failures), []
    if failed:
        print(f"{len(failed)} {what} did not complete: " + "; ".join(f"[{p}]" for p in failed), file=sys.stderr)
        sys.exit(1)


_sweep_failures: list[str] = []  # multirun: the points that did not complete, for the exit code


@hydra.main(version_base=None, config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> dict | None:
    point = sweep_point()
    try:
        summary = run(cfg)
    except UserError as err:
        print(refusal(err, point), file=sys.stderr)
        end_point(2, point, _sweep_failures)  # a sweep goes on with its other points
        return None
    print_summary(summary)
    status = summary.get("status")
    end_point(0 if status in ("completed", "submitted") else 143 if status == "preempted" else 1, point,
              _sweep_failures)
    return summary


def cli() -> None:
    """``python -m research_optim`` (and the ``research-optim`` script): a sweep whose points did not all complete
    (or get submitted) ends with exit code 1, after every point was tried."""
    main()
    exit_sweep(_sweep_failures, "sweep point(s)")


if __name__ == "__main__":
    cli()
