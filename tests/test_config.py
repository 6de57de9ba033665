"""Composition of the real config tree: every optimizer × model × data choice composes and is checked."""
from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import compose_config
from research_optim.app import CONFIG_DIR
from research_optim.build import constructor_args
from research_optim.config_checks import ConfigError, validate


def choices(group: str) -> list[str]:
    return sorted(p.stem for p in Path(CONFIG_DIR, group).glob("*.yaml"))


def test_every_group_has_its_defaults():
    for group in ("optimizer", "model", "data", "cluster", "logger", "schedule"):
        assert choices(group), f"conf/{group} is empty"
    cfg = compose_config()
    assert (cfg.optimizer.name, cfg.model.name, cfg.data.name, cfg.cluster.name) == ("adamw", "mlp", "digits", "local")


@pytest.mark.parametrize("optimizer", choices("optimizer"))
def test_every_optimizer_composes_and_validates(optimizer):
    cfg = compose_config([f"optimizer={optimizer}"])
    assert cfg.optimizer.name == optimizer and "_target_" in cfg.optimizer
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    validate(cfg)


@pytest.mark.slow  # composes every pair
@pytest.mark.parametrize("model", choices("model"))
def test_every_model_composes_with_every_data(model):
    """Model and data choices do not interact with the optimizer's (which only picks a schedule)."""
    for data in choices("data"):
        cfg = compose_config([f"model={model}", f"data={data}"])
        assert cfg.model.name == model and cfg.data.name == data
        assert "_target_" in cfg.model and "_target_" in cfg.data
        OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
        if cfg.data.kind in cfg.model.accepts:
            validate(cfg)
        else:
            with pytest.raises(ConfigError, match=f"model={model} takes"):
                validate(cfg)


@pytest.mark.slow  # composes every file of every group
def test_group_files_name_themselves():
    for group in ("optimizer", "model", "data", "schedule", "cluster", "logger"):
        for choice in choices(group):
            assert compose_config([f"{group}={choice}"])[group].name == choice, f"conf/{group}/{choice}.yaml"


@pytest.mark.slow  # composes every model and data
def test_models_and_data_declare_kinds():
    for model in choices("model"):
        accepts = compose_config([f"model={model}"]).model.accepts
        assert set(accepts) <= {"image", "vector", "text"}, model
    for data in choices("data"):
        assert compose_config([f"data={data}"]).data.kind in {"image", "vector", "text"}, data


def test_constructor_args_drop_labels():
    args = constructor_args(compose_config().optimizer)
    assert "name" not in args and args["_target_"] == "torch.optim.AdamW"


@pytest.mark.slow  # composes every optimizer
def test_schedule_free_and_line_search_configs_choose_constant_schedule():
    for optimizer in choices("optimizer"):
        if optimizer.startswith(("sf_", "salsa", "sls", "adam_sls")):
            assert compose_config([f"optimizer={optimizer}"]).schedule.name == "constant", optimizer
    assert compose_config(["optimizer=adamw"]).schedule.name == "cosine"


def test_the_schemas_hold_the_values_of_conf():
    """config_schema's dataclasses and conf/ give the same defaults, so a reader of either finds the truth."""
    from dataclasses import asdict

    from research_optim import config_schema

    cfg = compose_config()
    assert OmegaConf.to_container(cfg.train) == asdict(config_schema.Train())
    assert OmegaConf.to_container(cfg.schedule) == asdict(config_schema.Schedule())
    run = OmegaConf.to_container(cfg.run)
    assert run.pop("root") == "${oc.env:RESEARCH_OPTIM_RUNS,runs}"
    assert run == {k: v for k, v in asdict(config_schema.Run()).items() if k != "root"}
    for name in ("local", "torchrun", "slurm"):
        cluster = compose_config([f"cluster={name}"]).cluster
        assert OmegaConf.to_container(cluster) == asdict(config_schema.CLUSTERS[cluster.launcher]()), name
