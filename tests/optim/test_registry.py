"""The optimizer registry (config name → class), make_cautious, and the Hydra configs that target them."""
from __future__ import annotations

from pathlib import Path

import hydra.utils as hydra_utils
import pytest
import torch
from omegaconf import OmegaConf

from research_optim.optim import registry
from research_optim.optim.adamw import AdamW
from research_optim.optim.lion import Lion
from research_optim.optim.sgd import SGD

CONF = Path(__file__).resolve().parents[2] / "conf" / "optimizer"


def _params():
    return [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(3))]


def _node(name: str):
    node = OmegaConf.load(CONF / f"{name}.yaml")
    node.pop("defaults", None)
    return node


@pytest.mark.parametrize("name", sorted(registry.OPTIMIZERS))
def test_every_registered_name_is_the_config_of_that_class(name):
    node = _node(name)
    assert node.name == name
    assert hydra_utils.get_class(node._target_) is registry.OPTIMIZERS[name]


def test_adamw_and_sgd_have_one_meaning_each():
    assert registry.OPTIMIZERS["adamw"] is torch.optim.AdamW and registry.OPTIMIZERS["sgd"] is torch.optim.SGD
    assert registry.OPTIMIZERS["lib_adamw"] is AdamW and registry.OPTIMIZERS["lib_sgd"] is SGD


@pytest.mark.parametrize("base", registry.CAUTIOUS_BASES)
def test_every_cautious_base_is_a_registered_class_taking_a_phi(base):
    # cautious Adafactor masks its first moment, cautious Schedule-Free AdamW its inner momentum
    extra = {"adafactor": dict(beta1=0.9), "sf_adamw": dict(inner_momentum=0.9)}.get(base, {})
    opt = registry.make_cautious(_params(), base=base, phi="signxor", **extra)
    assert type(opt) is registry.OPTIMIZERS[base]
    assert "signxor" in (opt.defaults.get("cautious"), getattr(opt, "cautious", None))


@pytest.mark.parametrize("base,cls", [("lib_adamw", AdamW), ("lion", Lion), ("lib_sgd", SGD)])
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


@pytest.mark.parametrize("base", ["nope", "c_adamw", "adamw", "sgd"])
def test_make_cautious_unknown_base_lists_the_allowed(base):
    with pytest.raises(ValueError, match=r"allowed bases: \[.*'lib_adamw'.*'lion'.*'lib_sgd'"):
        registry.make_cautious(_params(), base=base)


@pytest.mark.parametrize("kwargs,match", [(dict(phi="bogus"), "phi"), (dict(phi=None), "phi"),
                                          (dict(phi="soft", cautious_factor=2.0), "cautious_factor"),
                                          (dict(cautious="soft"), "phi=")])
def test_make_cautious_rejects_bad_phi(kwargs, match):
    with pytest.raises(ValueError, match=match):
        registry.make_cautious(_params(), **kwargs)


# ------------------------------------------------------------------------------------------------ Hydra configs
def _instantiate(name: str, **overrides):
    node = _node(name)
    node.pop("name")
    for key, value in overrides.items():
        node[key] = value
    return hydra_utils.instantiate(node, _convert_="all")(_params())


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


@pytest.mark.parametrize("base,cls", [("lib_adamw", AdamW), ("lion", Lion), ("lib_sgd", SGD)])
@pytest.mark.parametrize("phi", ["indicator_mean", "soft"])
def test_cautious_config_switches_base_and_phi(base, cls, phi):
    opt = _instantiate("cautious", base=base, phi=phi)
    assert type(opt) is cls and opt.defaults["cautious"] == phi


def test_configs_keep_the_normal_schedule():
    """Cautious / Lion are not schedule-free: their configs must not override the schedule group."""
    for name in ("lion", "c_adamw", "c_lion", "cautious", "lib_adamw", "lib_sgd"):
        assert "defaults" not in OmegaConf.load(CONF / f"{name}.yaml"), name
