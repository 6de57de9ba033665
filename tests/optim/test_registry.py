"""The optimizer registry and make_cautious, and the Hydra configs that target them."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from research_optim.optim import registry
from research_optim.optim.adamw import AdamW
from research_optim.optim.lion import Lion
from research_optim.optim.sgd import SGD

CONF = Path(__file__).resolve().parents[2] / "conf" / "optimizer"


def _params():
    return [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(3))]


def test_registry_names_the_agreed_classes():
    for name in ("adamw", "lion", "sgd", "c_adamw", "c_lion", "sf_adamw", "sf_sgd", "salsa", "sls", "adam_sls"):
        assert name in registry.OPTIMIZERS
    assert registry.get_optimizer_class("lion") is Lion
    assert registry.get_optimizer_class("adamw") is AdamW
    assert registry.get_optimizer_class("sgd") is SGD


def test_get_optimizer_alias_returns_classes_for_the_schedule_free_wrapper():
    assert registry.get_optimizer("lion") is Lion


def test_every_registered_path_points_at_a_research_optim_module():
    for name, path in registry.OPTIMIZERS.items():
        module = path.rpartition(".")[0]
        assert module.startswith("research_optim.optim."), name
        # modules written by other engineers may not exist yet; those that exist must define the class
        if importlib.util.find_spec(module) is not None:
            assert isinstance(registry.get_optimizer_class(name), type), name


def test_unknown_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown optimizer 'nope'"):
        registry.get_optimizer_class("nope")


@pytest.mark.parametrize("base,cls", [("adamw", AdamW), ("lion", Lion), ("sgd", SGD)])
@pytest.mark.parametrize("phi,factor", [("indicator_mean", 0.0), ("soft", 0.5), ("signxor", 0.0)])
def test_make_cautious_builds_the_base_with_masking_on(base, cls, phi, factor):
    opt = registry.make_cautious(_params(), base=base, phi=phi, cautious_factor=factor, lr=3e-3)
    assert type(opt) is cls
    assert opt.defaults["cautious"] == phi and opt.defaults["cautious_factor"] == factor
    assert opt.defaults["lr"] == 3e-3
    for p in opt.param_groups[0]["params"]:
        p.grad = torch.randn_like(p)
    opt.step()
    assert 0.0 <= opt.diagnostics()["masked_fraction"] <= 1.0


@pytest.mark.parametrize("base", ["sf_adamw", "sf_sgd", "salsa"])
def test_make_cautious_over_other_engineers_bases(base):
    """Bases written elsewhere in the library are built the same way once their modules exist."""
    if base not in registry.cautious_bases():
        pytest.skip(f"{base} not importable (or takes no cautious=) in this checkout")
    opt = registry.make_cautious(_params(), base=base, phi="signxor")
    assert type(opt) is registry.get_optimizer_class(base)
    assert "signxor" in (opt.defaults.get("cautious"), getattr(opt, "cautious", None))


def test_make_cautious_steps_like_the_base_constructed_directly():
    a = _params()
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    ours = registry.make_cautious(a, base="lion", phi="soft", cautious_factor=0.25, lr=1e-2, betas=(0.95, 0.98))
    direct = Lion(b, lr=1e-2, betas=(0.95, 0.98), cautious="soft", cautious_factor=0.25)
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        for x, y in zip(a, b):
            x.grad = torch.randn(x.shape, generator=gen)
            y.grad = x.grad.clone()
        ours.step(), direct.step()
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_make_cautious_none_kwargs_keep_the_base_defaults():
    opt = registry.make_cautious(_params(), base="lion", lr=None, weight_decay=None, betas=None)
    assert opt.defaults["lr"] == 1e-4 and opt.defaults["betas"] == (0.9, 0.99)


@pytest.mark.parametrize("base", ["nope", "c_adamw"])
def test_make_cautious_unknown_base_lists_the_allowed(base):
    with pytest.raises(ValueError, match=r"allowed bases: \[.*'adamw'.*'lion'.*'sgd'"):
        registry.make_cautious(_params(), base=base)


@pytest.mark.parametrize("kwargs,match", [(dict(phi="bogus"), "phi"), (dict(phi=None), "phi"),
                                          (dict(phi="soft", cautious_factor=2.0), "cautious_factor"),
                                          (dict(cautious="soft"), "phi=")])
def test_make_cautious_rejects_bad_phi(kwargs, match):
    with pytest.raises(ValueError, match=match):
        registry.make_cautious(_params(), **kwargs)


def test_cautious_bases_only_lists_classes_taking_cautious():
    bases = registry.cautious_bases()
    assert {"adamw", "lion", "sgd"} <= set(bases)
    assert not set(bases) & registry.PRESETS


# ------------------------------------------------------------------------------------------------ Hydra configs
omegaconf = pytest.importorskip("omegaconf")
hydra_utils = pytest.importorskip("hydra.utils")


def _instantiate(name: str, **overrides):
    node = omegaconf.OmegaConf.load(CONF / f"{name}.yaml")
    node.pop("defaults", None)
    node.pop("name")
    for key, value in overrides.items():
        node[key] = value
    return hydra_utils.instantiate(node)(_params())


def test_lion_config_has_paper_defaults():
    opt = _instantiate("lion")
    assert type(opt) is Lion and opt.defaults["lr"] == 1e-4
    assert tuple(opt.defaults["betas"]) == (0.9, 0.99) and opt.defaults["cautious"] is None


def test_c_adamw_and_c_lion_configs():
    c_adamw = _instantiate("c_adamw")
    assert isinstance(c_adamw, AdamW) and c_adamw.defaults["cautious"] == "indicator_mean"
    assert (c_adamw.defaults["lr"], c_adamw.defaults["eps"], c_adamw.defaults["weight_decay"]) == (1e-3, 1e-8, 1e-2)
    assert tuple(c_adamw.defaults["betas"]) == (0.9, 0.999)
    c_lion = _instantiate("c_lion")
    assert isinstance(c_lion, Lion) and c_lion.defaults["cautious"] == "indicator_mean"
    assert c_lion.defaults["lr"] == 1e-4 and tuple(c_lion.defaults["betas"]) == (0.9, 0.99)


@pytest.mark.parametrize("base,cls", [("adamw", AdamW), ("lion", Lion), ("sgd", SGD)])
@pytest.mark.parametrize("phi", ["indicator_mean", "soft"])
def test_cautious_config_switches_base_and_phi(base, cls, phi):
    opt = _instantiate("cautious", base=base, phi=phi)
    assert type(opt) is cls and opt.defaults["cautious"] == phi


def test_configs_keep_the_normal_schedule():
    """Cautious / Lion are not schedule-free: their configs must not override the schedule group."""
    for name in ("lion", "c_adamw", "c_lion", "cautious"):
        assert "defaults" not in omegaconf.OmegaConf.load(CONF / f"{name}.yaml"), name
