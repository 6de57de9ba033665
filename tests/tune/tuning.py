"""Shared by the tune tests: tiny trials on the teacher–student task, and the study read back from its journal."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna

from tests.conftest import compose_config

# ~1 s trials: a small MLP, a few steps, small fixed splits and a cheap Bayes-loss estimate.
TINY_TUNE = ["data=teacher_student", "data.optimum_samples=4096", "data.num_val=256", "data.num_test=256",
             "model.dropout=0", "model.hidden=32", "train.steps=30", "train.batch_size=16", "train.eval_every=10",
             "train.log_every=10", "train.checkpoint_every=10", "train.progress=false", "tune.confirm_seeds=[100,101]"]


def tune_config(root: Path, *overrides: str):
    return compose_config([*TINY_TUNE, f"run.root={root}", *overrides], config_name="tune")


def tune_command(root: Path, *overrides: str, multirun: bool = False) -> list[str]:
    """The tune command line (``multirun``: Hydra's ``-m``, a study per point of the overrides' grid)."""
    return [sys.executable, "-m", "research_optim.tune", *(["-m"] if multirun else []), *TINY_TUNE,
            f"run.root={root}", *overrides]


def run_tune(root: Path, *overrides: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(tune_command(root, *overrides), capture_output=True, text=True, timeout=timeout)


def study(sweep_dir: Path) -> optuna.Study:
    """The one study under ``sweep_dir``, loaded from its journal."""
    (journal,) = (sweep_dir / "studies").glob("*.journal")
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    return optuna.load_study(study_name=journal.stem, storage=storage)


def summary(run_dir: str | Path) -> dict:
    return json.loads(Path(run_dir, "summary.json").read_text())


def selection(sweep_dir: Path) -> dict:
    return json.loads((sweep_dir / "selection.json").read_text())
