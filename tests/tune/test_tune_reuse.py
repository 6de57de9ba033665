"""The tuning protocol and code versions: a study's trials count only if their runs ran the current code (or reuse
is chosen explicitly); method keys that keep one selection per value (a φ ablation); a dry run."""
from __future__ import annotations

import pytest

from research_optim.tune.app import tune
from research_optim.tune.plan import TuneError
from tests.test_reuse import OLD, as_if_run_by
from tests.tune.tuning import selection, study, tune_config

pytestmark = pytest.mark.slow


def test_trials_of_other_code_are_refused_at_the_door_unless_reuse_is_chosen(tmp_path):
    args = ["tune.budget=2", "tune.confirm_seeds=[100]"]
    assert tune(tune_config(tmp_path, *args)) == 0
    trial = study(tmp_path / "tune").trials[0]
    as_if_run_by(trial.user_attrs["runs"][0], OLD)
    with pytest.raises(TuneError, match=f"trial 0: .* ran {OLD}(.|\n)*run.reuse=any keeps them"):
        tune(tune_config(tmp_path, *args, "tune.budget=3"))
    assert len(study(tmp_path / "tune").trials) == 2, "nothing run"
    assert tune(tune_config(tmp_path, *args, "tune.budget=3", "run.reuse=any")) == 0
    assert len(study(tmp_path / "tune").trials) == 3


def test_method_keys_keep_one_selection_per_value(tmp_path):
    """A φ ablation: each φ its own study (φ is not searched) and its own selection entry."""
    args = ["optimizer=cautious", "~search_space.phi", "~search_space.weight_decay", "tune.budget=1",
            "tune.confirm_seeds=[100]", "tune.method_keys=[optimizer.base,optimizer.phi]"]
    for phi in ("soft", "indicator_mean"):
        assert tune(tune_config(tmp_path, *args, f"optimizer.phi={phi}")) == 0
    entries = selection(tmp_path / "tune")["selected"]
    assert sorted(e["config"]["optimizer.phi"] for e in entries) == ["indicator_mean", "soft"]
    assert all(e["config"]["optimizer.base"] == "lib_adamw" for e in entries)


def test_a_dry_run_checks_the_config_and_describes_the_study_without_running(tmp_path, capsys):
    """A partition this cluster lacks is the paper cluster's business (not checked); a bad space is still refused."""
    slurm = ["cluster=slurm", "cluster.partition=gpu", "tune.dry_run=true", "tune.budget=8"]
    assert tune(tune_config(tmp_path, *slurm)) == 0
    out = capsys.readouterr().out
    assert "dry run  study adamw-mlp_teacher_student-" in out and "8 trials x 1 tuning seed(s) + 2 confirmation seeds = " \
        "10 runs of 30 steps" in out and "on SLURM partition gpu, 4 worker jobs" in out
    assert "lr [0.0001, 0.01] log" in out and not (tmp_path / "tune").exists(), "nothing written"
    with pytest.raises(TuneError, match="search_space.lr"):
        tune(tune_config(tmp_path, *slurm, "search_space.lr.low=-1"))
