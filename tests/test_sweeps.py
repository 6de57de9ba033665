"""Sweeps stored as config (conf/sweep/): every point of every grid composes, validates and builds its optimizer.

The grid is expanded exactly as ``python -m research_optim -m sweep=NAME [overrides]`` does it: Hydra's
BasicSweeper parses ``hydra.sweeper.params`` followed by the command-line overrides (a later key replaces an
earlier one) and takes the cartesian product. Seeds do not change what composes, so each grid is checked once per
distinct non-seed point.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from tests.conftest import compose_config
from research_optim.app import CONFIG_DIR
from research_optim.build import build_optimizer
from research_optim.config_checks import validate

SWEEPS = sorted(p.stem for p in Path(CONFIG_DIR, "sweep").glob("*.yaml"))


def sweep_points(name: str, overrides: list[str] = ()) -> list[list[str]]:
    """The override list of every job of ``-m sweep=NAME *overrides``, in Hydra's order."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose("config", overrides=[f"sweep={name}"], return_hydra_config=True)
    params = [f"{key}={value}" for key, value in cfg.hydra.sweeper.params.items()]
    parsed = OverridesParser.create().parse_overrides([*params, *overrides])
    (batch,) = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return [[f"sweep={name}", *point] for point in batch]


def test_every_sweep_is_listed():
    assert {"seeds", "phi_ablation", "beta_ablation", "line_search_ablation", "line_search_baselines", "lr_sweep",
            "optimizer_bench"} <= set(SWEEPS)


@pytest.mark.slow  # composes hundreds of points
@pytest.mark.parametrize("name", SWEEPS)
def test_every_point_composes_validates_and_builds(name):
    points = sweep_points(name)
    assert any(p.startswith("seed=") for p in points[0]), "seeds must be a sweep axis"
    distinct = {tuple(p for p in point if not p.startswith("seed=")) for point in points}
    model = torch.nn.Linear(3, 2)
    groups = set()
    for point in sorted(distinct):
        cfg = compose_config(list(point))
        validate(cfg)
        optimizer = build_optimizer(cfg.optimizer, model, cfg.train.weight_decay_norm_and_bias, steps_per_epoch=10)
        assert isinstance(optimizer, torch.optim.Optimizer)
        groups.add(cfg.run.group)
    # The sweep's runs land in runs/<group>/ (its W&B group); line_search_baselines joins line_search_ablation.
    assert groups == {"line_search_ablation" if name == "line_search_baselines" else name}


def test_grid_sizes_and_axes():
    assert len(sweep_points("phi_ablation")) == 3 * 5 * 2
    assert len(sweep_points("beta_ablation")) == 5 * 3 * 3 * 2
    assert len(sweep_points("lr_sweep")) == 6 * 11 * 2 * 2
    assert len(sweep_points("optimizer_bench")) == 2 * 13 * 3
    assert len(sweep_points("line_search_ablation")) == 11 * 2
    assert len(sweep_points("seeds")) == 3


def test_command_line_replaces_an_axis_as_in_hydra():
    points = sweep_points("phi_ablation", ["optimizer.base=lion", "seed=7", "run.group=mine"])
    assert len(points) == 5
    cfgs = [compose_config(p) for p in points]
    assert {c.optimizer.base for c in cfgs} == {"lion"} and {c.seed for c in cfgs} == {7}
    assert {c.optimizer.phi for c in cfgs} == {"indicator_mean", "indicator_ratio", "indicator", "soft", "signxor"}
    assert {c.run.group for c in cfgs} == {"mine"}
    bench = [compose_config(p) for p in sweep_points("optimizer_bench", ["optimizer=adamw", "seed=0"])]
    assert sorted((c.model.name, c.data.name) for c in bench) == [("gpt", "synthetic_lm"), ("mlp", "digits")]


@pytest.mark.slow  # composes every point of the grid
def test_beta_grid_reaches_every_optimizer():
    cfgs = [compose_config(p) for p in sweep_points("beta_ablation", ["seed=0"])]
    by_opt: dict[str, set] = {}
    for c in cfgs:
        by_opt.setdefault(c.optimizer.name, set()).add(tuple(c.optimizer.betas))
    assert set(by_opt) == {"adamw", "c_adamw", "lion", "c_lion", "sf_adamw"}
    assert all(len(b) == 9 for b in by_opt.values())
    assert {b[0] for b in by_opt["sf_adamw"]} == {0.9, 0.95, 0.98}  # the Schedule-Free β


def test_line_search_default_variant_is_salsa_default():
    """The ablation's `default` variant restates conf/optimizer/salsa.yaml; this keeps the two from drifting."""
    plain = OmegaConf.to_container(compose_config(["optimizer=salsa"]).optimizer, resolve=True)
    ablated = compose_config(["sweep=line_search_ablation"])
    variant = OmegaConf.to_container(ablated.line_search.variants.default)
    assert variant == {key: plain[key] for key in variant}
    assert OmegaConf.to_container(ablated.optimizer, resolve=True) == plain
    speedless = compose_config(["sweep=line_search_ablation", "line_search.variant=no_speed_up"])
    assert speedless.optimizer.speed_up is False and speedless.optimizer.c == plain["c"]
