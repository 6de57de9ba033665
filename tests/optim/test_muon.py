"""Muon against torch.optim.Muon (bit for bit) and torch.optim.AdamW, its fast path, and its compositions through
the shared layer: cautious masking, the Schedule-Free wrapper and SaLSA's line search; param-group split, the
hidden-matrix picker the configs use, checks (checkpoints and pickling: test_direction_contract.py)."""
from __future__ import annotations

import socket

import pytest
import schedulefree
import torch
import torch.distributed as dist
from torch import nn
from torch.optim._muon import _zeropower_via_newtonschulz

from research_optim.build import build_data, build_model, build_optimizer
from research_optim.data.base import DataSpec
from research_optim.models.llama import Llama
from research_optim.optim.muon import CautiousMuon, Muon, hidden_matrices
from research_optim.optim.salsa import SaLSA
from research_optim.optim.schedule_free_wrapper import ScheduleFreeWrapper
from tests.conftest import compose_config
from tests.optim.harness import SHAPES, make_params, run_side_by_side

MATRICES = ((16, 8), (5, 12), (7, 7), (1, 9))  # tall, wide, square, a row
STEPS = 120
EXACT = dict(rtol=0.0, atol=0.0)


@pytest.mark.parametrize("dtype", [pytest.param(torch.float32, marks=pytest.mark.slow), torch.float64])  # fast tier: one
@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(lr=0.02, nesterov=False),
    dict(lr=0.02, weight_decay=0.0, adjust_lr_fn="match_rms_adamw", momentum=0.9),
    dict(lr=0.01, weight_decay=0.05, adjust_lr_fn="spectral_unclamped", ns_steps=3, eps=1e-6),
], ids=["defaults", "plain-momentum", "match-rms", "spectral-3-steps"])
def test_matrices_match_torch_muon_bit_for_bit(dtype, kwargs):
    run_side_by_side(lambda ps: Muon(ps, **kwargs), lambda ps: torch.optim.Muon(ps, **kwargs), steps=STEPS,
                     shapes=MATRICES, dtype=dtype, **EXACT)


class _TorchMuonWithAdamW:
    """The Muon README's setup with torch's classes: torch Muon for the matrices, torch AdamW for the rest."""

    def __init__(self, params, muon_kwargs, adamw_kwargs):
        self.muon = torch.optim.Muon([p for p in params if p.ndim == 2], **muon_kwargs)
        self.adamw = torch.optim.AdamW([p for p in params if p.ndim != 2], foreach=False, **adamw_kwargs)

    def step(self):
        self.muon.step()
        self.adamw.step()


def test_non_matrix_parameters_follow_torch_adamw():
    muon_kwargs = dict(lr=0.02, weight_decay=0.1)
    adamw_kwargs = dict(lr=3e-3, betas=(0.9, 0.95), eps=1e-10, weight_decay=0.05)
    ours = lambda ps: Muon(ps, **muon_kwargs, **{f"adamw_{k}": v for k, v in adamw_kwargs.items()})
    # SHAPES mixes matrices with vectors and a 4-D tensor; Adam's direction is not torch's addcdiv bit for bit
    run_side_by_side(ours, lambda ps: _TorchMuonWithAdamW(ps, muon_kwargs, adamw_kwargs), steps=STEPS,
                     shapes=SHAPES, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cautious", [None, "indicator_mean", "soft"])
def test_foreach_equals_reference_bit_for_bit(cautious):
    make = lambda impl: lambda ps: Muon(ps, lr=0.02, cautious=cautious, cautious_factor=0.3, implementation=impl)
    run_side_by_side(make("foreach"), make("reference"), steps=30, shapes=SHAPES + MATRICES, dtype=torch.float32,
                     **EXACT)


def test_cautious_muon_masks_the_orthogonalised_direction():
    """One step by hand: p ← p·(1 − lr·λ) − lr·r·O∘I(O·g > 0)/max(mean, 1e-3), O from torch's own iteration."""
    gen = torch.Generator().manual_seed(0)
    p0, g = torch.randn(6, 4, generator=gen), torch.randn(6, 4, generator=gen)
    p = nn.Parameter(p0.clone())
    opt = CautiousMuon([p], lr=0.02, weight_decay=0.1)
    p.grad = g.clone()
    opt.step()
    buf = torch.zeros_like(g).lerp_(g, 1 - 0.95)
    o = _zeropower_via_newtonschulz(g.lerp(buf, 0.95), (3.4445, -4.7750, 2.0315), 5, 1e-7).float()
    keep = (o * g > 0).float()
    expected = p0 * (1 - 0.02 * 0.1) - 0.02 * (6 / 4) ** 0.5 * o * keep / keep.mean().clamp(min=1e-3)
    torch.testing.assert_close(p.detach(), expected, rtol=1e-6, atol=1e-7)
    assert opt.diagnostics()["masked_fraction"] == pytest.approx(1 - keep.mean().item())


def test_schedule_free_wrapper_over_muon_matches_the_package():
    """Muon through our wrapper == torch Muon through schedulefree's ScheduleFreeWrapper (its z in the base's state
    works for Muon, which creates its buffer only when missing)."""
    def make(wrapper, cls):
        def build(ps):
            opt = wrapper(cls(ps, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0), momentum=0.9)
            opt.train()
            return opt
        return build

    run_side_by_side(make(ScheduleFreeWrapper, Muon), make(schedulefree.ScheduleFreeWrapper, torch.optim.Muon),
                     steps=STEPS, shapes=MATRICES, rtol=1e-10, atol=1e-12)


def _regression(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1))
    xs = [torch.randn(32, 4, generator=gen) for _ in range(8)]
    return model, [(x, x.sum(1, keepdim=True).sin()) for x in xs]


def _loss(model, batches) -> float:
    with torch.no_grad():
        return sum(nn.functional.mse_loss(model(x), y).item() for x, y in batches) / len(batches)


@pytest.mark.parametrize("cautious", [None, "indicator_mean"])
def test_salsa_searches_along_muon_directions(cautious):
    model, batches = _regression()
    opt = SaLSA(model.parameters(), direction="muon", cautious=cautious)
    start = _loss(model, batches)
    for t in range(80):
        x, y = batches[t % len(batches)]
        opt.step(lambda: nn.functional.mse_loss(model(x), y))
    assert _loss(model, batches) < 0.5 * start
    assert "momentum_buffer" in opt.state[model[2].weight] and "exp_avg_sq" in opt.state[model[2].bias]
    assert ("masked_fraction" in opt.diagnostics()) == (cautious is not None)


def test_salsa_muon_first_trial_point_is_the_orthogonalised_gradient():
    gen = torch.Generator().manual_seed(1)
    p0 = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    p = nn.Parameter(p0.clone())
    opt = SaLSA([p], direction="muon", init_step_size=0.01)
    seen = []

    def closure():
        seen.append(p.detach().clone())
        return (p ** 2).sum()

    opt.step(closure)
    o = _zeropower_via_newtonschulz(2 * p0, (3.4445, -4.7750, 2.0315), 5, 1e-7).double()
    torch.testing.assert_close(seen[1], p0 - 0.011 * 0.2 * 6 ** 0.5 * o, rtol=1e-12, atol=1e-12)


# -- param groups -----------------------------------------------------------------------------------------------
def test_groups_without_use_muon_are_split_by_shape_and_get_each_kinds_defaults():
    params = [nn.Parameter(t) for t in make_params(SHAPES)]
    opt = Muon(params, lr=0.02, adamw_lr=3e-4, adamw_betas=(0.9, 0.95))
    muon_group, adamw_group = opt.param_groups
    assert muon_group["use_muon"] and [p.shape for p in muon_group["params"]] == [(5, 3), (16, 8)]
    assert not adamw_group["use_muon"] and len(adamw_group["params"]) == 3
    assert (muon_group["lr"], adamw_group["lr"], adamw_group["betas"]) == (0.02, 3e-4, (0.9, 0.95))
    assert "momentum" not in adamw_group and "betas" not in muon_group


def test_hidden_matrices_are_the_linears_but_the_head_and_tied_embeddings():
    mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    assert hidden_matrices(mlp) == {mlp[0].weight, mlp[2].weight}
    cfg = compose_config(["optimizer=muon", "experiment=lm_synthetic"])
    model = build_model(cfg.model, build_data(cfg.data))
    opt = build_optimizer(cfg.optimizer, model, cfg.train.weight_decay_norm_and_bias)
    muon_params = {id(p) for g in opt.param_groups if g["use_muon"] for p in g["params"]}
    assert id(model.tok_emb.weight) not in muon_params and id(model.pos_emb.weight) not in muon_params
    assert model.head.weight is model.tok_emb.weight
    assert muon_params == {id(p) for p in hidden_matrices(model)} and muon_params



@pytest.mark.parametrize("spec", [DataSpec(task="lm", input_shape=(16,), num_classes=50),
                                  DataSpec(task="classification", input_shape=(16,), num_classes=3, vocab_size=50)])
def test_hidden_matrices_of_llama_leave_out_its_head(spec):
    """LLaMA's head (lm_head, untied, or the classifier's score) is its last Linear: AdamW's, as the embeddings."""
    model = Llama(spec, n_layer=2, n_head=4, n_embd=32, intermediate_size=48)
    head = model.score if model.classify else model.lm_head
    linears = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
    assert hidden_matrices(model) == set(linears) - {head.weight} and len(linears) == 2 * 7 + 1

@pytest.mark.parametrize("name,cls", [("muon", Muon), ("c_muon", CautiousMuon), ("sf_muon", ScheduleFreeWrapper),
                                      ("salsa_muon", SaLSA)])
def test_configs_give_muon_the_hidden_matrices(name, cls):
    cfg = compose_config([f"optimizer={name}"])
    model = build_model(cfg.model, build_data(cfg.data))
    opt = build_optimizer(cfg.optimizer, model, cfg.train.weight_decay_norm_and_bias)
    assert type(opt) is cls
    groups = opt.base.param_groups if isinstance(opt, ScheduleFreeWrapper) else opt.param_groups
    hidden = {id(p) for p in hidden_matrices(model)}
    assert {id(p) for g in groups if g["use_muon"] for p in g["params"]} == hidden


# -- checks and checkpoints -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,name", [
    (dict(lr=0.0), "lr"), (dict(momentum=1.0), "momentum"), (dict(nesterov=1), "nesterov"),
    (dict(ns_steps=0), "ns_steps"), (dict(ns_steps=2.5), "ns_steps"),
    (dict(ns_coefficients=(1.0, 2.0)), "ns_coefficients"),
    (dict(eps=-1.0), "eps"), (dict(adjust_lr_fn="none"), "adjust_lr_fn"), (dict(ns_dtype="float16"), "ns_dtype"),
    (dict(weight_decay=-0.1), "weight_decay"), (dict(adamw_betas=(0.9, 1.0)), r"betas\[1\]"),
    (dict(adamw_eps=-1e-8), "eps"), (dict(adamw_lr=-1.0), "lr"), (dict(cautious="bogus"), "cautious"),
    (dict(implementation="compiled"), "implementation"),
])
def test_bad_hyperparameters_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Muon([nn.Parameter(torch.zeros(3, 2)), nn.Parameter(torch.zeros(2))], **kwargs)


def test_use_muon_group_refuses_non_matrices():
    with pytest.raises(ValueError, match="2-D matrices only"):
        Muon([{"params": [nn.Parameter(torch.zeros(3))], "use_muon": True}])
    with pytest.raises(ValueError, match="use_muon"):
        Muon([{"params": [nn.Parameter(torch.zeros(3, 3))], "use_muon": "yes"}])


def test_sharded_matrices_are_refused(tmp_path):
    """Newton–Schulz needs whole matrices: a DTensor (FSDP's sharded parameter) is refused at construction, by Muon
    and by SaLSA searching along Muon directions (not by the Adam directions, which work per coordinate)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        sharded = nn.Parameter(distribute_tensor(torch.zeros(4, 4), init_device_mesh("cpu", (1,)), [Shard(0)]))
        with pytest.raises(ValueError, match="Muon: a Muon matrix of shape \\(4, 4\\) is sharded"):
            Muon([sharded])
        with pytest.raises(ValueError, match="SaLSA: a Muon matrix of shape \\(4, 4\\) is sharded"):
            SaLSA([sharded], direction="muon")
        SaLSA([sharded], direction="adam")
    finally:
        dist.destroy_process_group()


def test_every_hyperparameter_is_checked_even_without_a_matrix():
    """The constructor is the source of truth for configs: Muon's values are checked with no 2-D parameter too."""
    with pytest.raises(ValueError, match="ns_steps"):
        Muon([nn.Parameter(torch.zeros(3))], ns_steps=0)


def test_bfloat16_momentum_buffer_is_not_normalised_in_place():
    """Deliberate difference: torch's iteration divides a bfloat16 buffer in place (nesterov=False); ours copies."""
    p = nn.Parameter(torch.randn(6, 4).bfloat16())
    opt = Muon([p], nesterov=False)
    p.grad = torch.randn(6, 4).bfloat16() * 10
    opt.step()
    torch.testing.assert_close(opt.state[p]["momentum_buffer"], torch.zeros_like(p).lerp_(p.grad, 0.05))
