"""Search spaces as config, the Sobol sampler, edges, and the tune command's checks at the door."""
from __future__ import annotations

import subprocess
from pathlib import Path

import optuna
import pytest
from scipy.stats import qmc

from tests.conftest import compose_config
from research_optim.app import CONFIG_DIR
from research_optim.tune.app import tune
from research_optim.tune.plan import Plan, TuneError
from research_optim.tune.sampler import SobolSampler
from research_optim.tune.space import Dimension
from tests.tune.tuning import tune_command, tune_config

OPTIMIZERS = sorted(p.stem for p in Path(CONFIG_DIR, "optimizer").glob("*.yaml"))


@pytest.mark.slow  # composes every corner of every optimizer's space
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_has_a_search_space_valid_at_every_corner(tmp_path, optimizer):
    """Each conf/search_space file names real keys of its optimizer, and the optimizer accepts every bound."""
    plan = Plan.from_config(tune_config(tmp_path, f"optimizer={optimizer}"))
    assert plan.space.dimensions and all(dim.key.startswith("optimizer.") for dim in plan.space.dimensions)
    assert not any(tmp_path.iterdir()), "the checks at the door write nothing"


def test_sampled_values_become_config_overrides(tmp_path):
    plan = Plan.from_config(tune_config(tmp_path))
    params = {"lr": 3e-3, "one_minus_beta1": 0.05, "weight_decay": 0.1}
    cfg = plan.config(params, seed=7)
    assert (cfg.optimizer.lr, list(cfg.optimizer.betas), cfg.optimizer.weight_decay, cfg.seed) == (
        3e-3, [0.95, 0.999], 0.1, 7)
    # reports compare lists whole: the selection names optimizer.betas, not one element
    assert plan.space.settings_keys(cfg) == ["optimizer.betas", "optimizer.lr", "optimizer.weight_decay"]
    assert plan.base.optimizer.lr == 1e-3, "the base config is left as it was"


def test_edges_on_the_sampling_scale_and_the_widened_bound():
    lr = Dimension("lr", "optimizer.lr", 1e-4, 1e-2, log=True)
    assert [lr.edge(v, 0.05) for v in (1.1e-4, 1e-3, 9e-3, 2e-2)] == ["lower", None, "upper", "upper"]
    assert lr.widened("upper") == pytest.approx(0.1) and lr.widened("lower") == pytest.approx(1e-5)
    c = Dimension("c", "optimizer.c", 0.1, 0.9)
    assert c.edge(0.13, 0.05) == "lower" and c.edge(0.5, 0.05) is None and c.widened("upper") == pytest.approx(1.3)
    beta = Dimension("one_minus_beta1", "optimizer.betas.0", 0.02, 0.5, log=True, one_minus=True)
    assert beta.config_value(0.1) == pytest.approx(0.9) and beta.widened("upper") == 1.0  # 1 − β stays ≤ 1
    assert Dimension("phi", "optimizer.phi", choices=("a", "b")).edge("a", 0.05) is None


def test_trial_n_gets_point_n_of_one_scrambled_sobol_sequence_in_the_current_space():
    """Workers share the sequence without a counter, and a widened space maps the same points into its range."""
    space = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
             "c": optuna.distributions.FloatDistribution(0.1, 0.9)}
    points = qmc.Sobol(2, scramble=True, seed=11).random(8)
    study = optuna.create_study(sampler=SobolSampler(space, seed=11))
    for _ in range(5):
        trial = study.ask()
        lr, c = trial.suggest_float("lr", 1e-4, 1e-2, log=True), trial.suggest_float("c", 0.1, 0.9)
        u = points[trial.number]
        assert lr == pytest.approx(10 ** (-4 + 2 * u[0])) and c == pytest.approx(0.1 + 0.8 * u[1])
        study.tell(trial, lr)
    study.sampler = SobolSampler({**space, "lr": optuna.distributions.FloatDistribution(1e-4, 1.0, log=True)}, 11)
    trial = study.ask()
    assert trial.suggest_float("lr", 1e-4, 1.0, log=True) == pytest.approx(10 ** (-4 + 4 * points[5][0]))


@pytest.mark.parametrize("overrides, message", [
    (["search_space.lr.key=optimizer.lrr"], "search_space.lr.key=optimizer.lrr: no such key in the composed config "
                                            "(optimizer has: name, _target_, _partial_, lr, betas, eps"),
    (["~search_space.lr", "~search_space.weight_decay", "~search_space.one_minus_beta1"], "search_space is empty"),
    (["tune.budget=0"], "tune.budget=0: must be an integer >= 1"),
    (["data=digits", "data.val_fraction=0"], "data.val_fraction=0: data=digits then has no validation split"),
    (["data=cifar10", "model=resnet18", "data.val_split=test"], "data.val_split=test: this is the test split"),
    (["tune.confirm_seeds=[0,1]"], "tune.confirm_seeds shares [0] with tune.seeds: confirmation needs fresh seeds"),
    (["search_space.lr.low=0.1"], "search_space.lr: low=0.1 must be below high=0.01"),
    (["search_space.lr.low=0", "search_space.lr.log=false"],
     "the search space reaches an invalid config at lr=0 one_minus_beta1=0.02 weight_decay=0.005"),
    (["+search_space.order.key=seed", "+search_space.order.choices=[1,2]"], "search_space.order.key=seed: the seeds "
                                                                            "are the protocol's"),
    (["+search_space.nodes.key=cluster.nodes", "+search_space.nodes.choices=[1,2]"],
     "search_space.nodes.key=cluster.nodes: cluster is not part of a run's identity"),
    (["cluster=slurm", "cluster.partition=debug", "cluster.tasks_per_node=2"],
     "cluster=slurm starts 2 processes per job; a tuning worker is one SLURM job of one process"),
])
def test_bad_input_is_refused_before_anything_runs(tmp_path, overrides, message):
    with pytest.raises(TuneError) as err:
        tune(compose_config([f"run.root={tmp_path}", *overrides], config_name="tune"))
    assert message in str(err.value)
    assert not any(tmp_path.iterdir()), "nothing may be written"


@pytest.mark.slow  # a subprocess
def test_the_command_lists_every_problem_and_exits_2(tmp_path):
    out = subprocess.run(tune_command(tmp_path, "tune.budget=0", "search_space.lr.key=optimizer.lrr"),
                         capture_output=True, text=True, timeout=120)
    assert (out.returncode, out.stdout) == (2, ""), out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines[0] == "error: cannot tune:" and len(lines) == 3
    assert "tune.budget=0" in lines[1] and "optimizer.lrr" in lines[2]
    assert not any(tmp_path.iterdir())

