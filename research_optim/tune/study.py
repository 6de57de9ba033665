"""The shared study: Optuna journal storage in the sweep directory, and trials claimed under a lock.

    <sweep dir>/studies/<study>.journal  every trial: parameters, state, value, owner ("host pid [slurm job]")
    <sweep dir>/studies/<study>.lock     held (flock) while a worker claims a trial

A worker claims a trial under the lock: first a RUNNING trial whose owner is gone (killed -9, its node lost, its
SLURM job requeued: :func:`~research_optim.run_dir.owner_is_gone`) — taken over, its runs resume from their
checkpoints —, otherwise a new trial while fewer than ``budget`` exist. Every trial ever asked counts toward the
budget, whatever its state, so a trial is never lost and never counted twice.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from research_optim.run_dir import owner_is_gone, process_owner
from research_optim.tune.sampler import make_sampler

optuna.logging.set_verbosity(optuna.logging.WARNING)  # the tune command says what happens, once


@dataclass
class Claim:
    """A trial this worker now owns: new, or taken over from ``previous_owner``."""

    number: int
    params: dict[str, Any]
    previous_owner: str | None = None


class Study:
    def __init__(self, sweep_dir: Path, name: str, direction: str) -> None:
        self.name, self.direction = name, direction
        self.folder = sweep_dir / "studies"
        self.journal = self.folder / f"{name}.journal"
        self.lock_path = self.folder / f"{name}.lock"

    @functools.cached_property
    def storage(self) -> optuna.storages.JournalStorage:
        self.folder.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(self.journal)))

    @functools.cached_property
    def study(self) -> optuna.Study:
        """The Optuna study, created in the journal on first use."""
        return optuna.create_study(study_name=self.name, storage=self.storage, direction=self.direction,
                                   load_if_exists=True)

    def trials(self) -> list[FrozenTrial]:
        """Every trial so far (none when the journal does not exist yet: nothing is created to find out)."""
        return self.study.get_trials(deepcopy=False) if "study" in self.__dict__ or self.journal.exists() else []

    def progress(self, budget: int) -> str:
        return f"study {self.name}: {len(self.trials())} of {budget} trials so far ({self.journal})"

    def claim(self, space: dict[str, BaseDistribution], sampler: str, seed: int, budget: int) -> Claim | None:
        """A trial for this worker to run, or None when the budget is spent and no trial is orphaned."""
        with file_lock(self.lock_path):
            trials = self.study.get_trials(deepcopy=False)
            for trial in trials:
                owner = trial.user_attrs.get("owner", "")
                if trial.state == TrialState.RUNNING and owner_is_gone(owner):
                    self.set_attr(trial.number, "owner", process_owner())
                    return Claim(trial.number, dict(trial.params), owner or "a worker that died claiming it")
            if len(trials) >= budget:
                return None
            self.study.sampler = make_sampler(sampler, space, seed, len(trials), budget)
            trial = self.study.ask()
            for name, dist in space.items():
                _suggest(trial, name, dist)
            trial.set_user_attr("owner", process_owner())
            trial.set_user_attr("sampler", sampler)
            return Claim(trial.number, dict(trial.params))

    def set_attr(self, number: int, key: str, value: Any) -> None:
        study_id = self.storage.get_study_id_from_name(self.study.study_name)
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(study_id, number)
        self.storage.set_trial_user_attr(trial_id, key, value)

    def tell(self, number: int, value: float | None, attrs: dict[str, Any]) -> None:
        """Finish a trial: its value (None: failed) and what to remember about it (status, runs, error)."""
        for key, item in attrs.items():
            self.set_attr(number, key, item)
        if value is None:
            self.study.tell(number, state=TrialState.FAIL)
        else:
            self.study.tell(number, value)

    def running_elsewhere(self) -> list[FrozenTrial]:
        """RUNNING trials whose owner is alive (another worker is on them)."""
        return [t for t in self.trials() if t.state == TrialState.RUNNING
                and not owner_is_gone(t.user_attrs.get("owner", ""))]


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed); the kernel releases it if the process dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _suggest(trial: optuna.Trial, name: str, dist: BaseDistribution) -> None:
    if isinstance(dist, CategoricalDistribution):
        trial.suggest_categorical(name, dist.choices)
    else:
        assert isinstance(dist, FloatDistribution)
        trial.suggest_float(name, dist.low, dist.high, log=dist.log)
