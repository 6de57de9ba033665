"""The cautious φ family on hand-made tensors with known answers, and cautious masking over every base we own."""
from __future__ import annotations

import math

import pytest
import torch

from research_optim.optim.adamw import AdamW
from research_optim.optim.cautious import (
    PHI_FUNCTIONS, MaskedFraction, cautious_direction, cautious_mask, cautious_masked, check_phi, number_kept,
)
from research_optim.optim.lion import Lion
from research_optim.optim.sgd import SGD

F64 = torch.float64


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


# u·g = [2, −1, 0, 0, 8]: strictly aligned at 0 and 4; exact zeros at 2 (u ≠ 0, g ≠ 0 ... u = 0) and 3 (g = 0).
U = t(2.0, -1.0, 0.0, 3.0, -4.0)
G = t(1.0, 1.0, 5.0, 0.0, -2.0)

# phi, cautious_factor, expected mask, expected masked fraction
KNOWN = [
    ("indicator", 0.0, t(1, 0, 0, 0, 1), 3 / 5),
    ("indicator_mean", 0.0, t(2.5, 0, 0, 0, 2.5), 3 / 5),  # 1 / mean(I) = 1 / 0.4
    ("indicator_ratio", 0.0, t(5 / 3, 0, 0, 0, 5 / 3), 3 / 5),  # numel / (ΣI + 1) = 5 / 3
    ("soft", 0.0, t(2.5, 0, 0, 0, 2.5), 3 / 5),  # factor 0 is indicator_mean
    ("soft", 0.5, t(1 / 0.7, 0.5 / 0.7, 0.5 / 0.7, 0.5 / 0.7, 1 / 0.7), 3 / 5),  # mean([1, .5, .5, .5, 1]) = 0.7
    ("signxor", 0.0, t(1.25, 0, 1.25, 1.25, 1.25), 1 / 5),  # exact zeros kept; 5 / 4 kept
]


@pytest.mark.parametrize("phi,factor,mask,fraction", KNOWN, ids=[f"{k[0]}-{k[1]}" for k in KNOWN])
def test_phi_known_answers(phi, factor, mask, fraction):
    torch.testing.assert_close(cautious_mask(U, G, phi, factor), mask, rtol=1e-15, atol=0)
    counter = MaskedFraction()
    direction = cautious_direction(U, G, phi, factor, counter)
    torch.testing.assert_close(direction, U * mask, rtol=1e-15, atol=0)
    assert counter.value() == pytest.approx(fraction)


def test_phi_table_is_complete():
    assert set(PHI_FUNCTIONS) == {"indicator_mean", "indicator_ratio", "indicator", "soft", "signxor"}
    assert {k[0] for k in KNOWN} == set(PHI_FUNCTIONS)


ALL_MASKED_U, ALL_MASKED_G = t(1.0, -2.0, 3.0), t(-1.0, 1.0, -0.5)


@pytest.mark.parametrize("phi,factor", [("indicator", 0.0), ("indicator_mean", 0.0), ("indicator_ratio", 0.0),
                                        ("soft", 0.0), ("signxor", 0.0)])
def test_all_masked_tensor_gives_zero_update(phi, factor):
    counter = MaskedFraction()
    direction = cautious_direction(ALL_MASKED_U, ALL_MASKED_G, phi, factor, counter)
    assert torch.equal(direction, torch.zeros(3, dtype=F64))  # clamps avoid 0/0: no NaN
    assert counter.value() == 1.0


def test_all_masked_soft_half_keeps_the_direction():
    """soft with factor 0.5 and nothing aligned: every coordinate weighs 0.5, divided by its mean 0.5 → 1."""
    direction = cautious_direction(ALL_MASKED_U, ALL_MASKED_G, "soft", 0.5)
    torch.testing.assert_close(direction, ALL_MASKED_U, rtol=1e-15, atol=0)


def test_soft_factor_one_is_identity_and_none_returns_u():
    torch.testing.assert_close(cautious_direction(U, G, "soft", 1.0), U, rtol=1e-15, atol=0)
    assert cautious_direction(U, G, None) is U


def test_direction_does_not_modify_inputs_and_keeps_dtype():
    u, g = U.clone(), G.clone()
    cautious_direction(u, g, "indicator_mean")
    assert torch.equal(u, U) and torch.equal(g, G)
    assert cautious_mask(U, G, "indicator_mean").dtype == F64  # float64 runs stay float64 to the last bit
    bf = cautious_direction(U.to(torch.bfloat16), G.to(torch.bfloat16), "indicator_mean")
    assert bf.dtype == torch.bfloat16
    assert cautious_mask(U.to(torch.bfloat16), G.to(torch.bfloat16), "indicator_mean").dtype == torch.float32


def test_the_kept_count_is_exact_beyond_float32s_integers():
    """φ's mean and the masked count come from one integer count: exact where a float32 sum of 0/1 rounds
    (2**24 + 1 is not a float32)."""
    n = 2**24 + 3
    keep = torch.ones(n, dtype=torch.bool)
    keep[:2] = False
    assert torch.ones(n).sum().item() != n  # what a float32 sum gives
    assert number_kept(keep).item() == n - 2 and number_kept(keep).dtype == torch.int32
    u = torch.where(keep, 1.0, -1.0)
    _, masked = cautious_masked(u, torch.ones(n), "indicator", 0.0)
    assert masked.item() == 2 and masked.dtype == torch.int64  # summed over tensors and steps by the counter


def test_masked_fraction_accumulates_over_tensors_until_pop():
    counter = MaskedFraction()
    assert counter.value() == 0.0
    cautious_direction(U, G, "indicator", counter=counter)  # 3 of 5 masked
    cautious_direction(ALL_MASKED_U, ALL_MASKED_G, "indicator", counter=counter)  # 3 of 3
    assert counter.pop() == pytest.approx(6 / 8)
    assert counter.value() == 0.0  # pop resets


@pytest.mark.parametrize("phi,factor,match", [("bogus", 0.0, "phi"), ("soft", 1.5, "cautious_factor"),
                                              ("soft", -0.1, "cautious_factor")])
def test_check_phi_rejects(phi, factor, match):
    with pytest.raises(ValueError, match=match):
        check_phi("test", phi, factor)


# ----------------------------------------------------------------------------- cautious over every base we own
BASES = {
    "adamw": lambda p, **kw: AdamW(p, lr=0.1, weight_decay=0.2, **kw),
    "lion": lambda p, **kw: Lion(p, lr=0.1, weight_decay=0.2, **kw),
    "sgd": lambda p, **kw: SGD(p, lr=0.1, momentum=0.9, weight_decay=0.2, **kw),
    "sgd_nesterov": lambda p, **kw: SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.2, **kw),
}


def _constant_gradient_run(make, steps=25, **kw) -> torch.Tensor:
    """With a constant gradient every base's direction has g's sign everywhere (u·g > 0 on every coordinate)."""
    p = torch.nn.Parameter(torch.linspace(-1.0, 1.0, 12, dtype=F64).reshape(3, 4))
    grad = torch.tensor([0.3, -1.2, 2.0, -0.01] * 3, dtype=F64).reshape(3, 4)
    opt = make([p], **kw)
    for _ in range(steps):
        p.grad = grad.clone()
        opt.step()
    if kw.get("cautious"):
        assert opt.diagnostics() == {"masked_fraction": 0.0}
    return p.detach()


@pytest.mark.parametrize("base", sorted(BASES))
@pytest.mark.parametrize("phi,factor", [("indicator_mean", 0.0), ("indicator", 0.0), ("soft", 0.0), ("soft", 0.5),
                                        ("signxor", 0.0)])
def test_all_aligned_cautious_equals_base(base, phi, factor):
    plain = _constant_gradient_run(BASES[base])
    cautious = _constant_gradient_run(BASES[base], cautious=phi, cautious_factor=factor)
    torch.testing.assert_close(cautious, plain, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("base", sorted(BASES))
def test_all_aligned_indicator_ratio_scales_the_step(base):
    """indicator_ratio rescales by numel/(ΣI + 1) even when everything is kept: one step moves 12/13 as far."""
    p0 = torch.ones(12, dtype=F64)
    grad = torch.linspace(-1.0, 1.0, 12, dtype=F64) + 0.05  # no exact zero
    steps = {}
    for phi in (None, "indicator_ratio"):
        p = torch.nn.Parameter(p0.clone())
        opt = BASES[base]([p], cautious=phi)
        p.grad = grad.clone()
        opt.step()
        steps[phi] = p.detach() - p0 * (1 - 0.1 * 0.2)  # remove the (unmasked) decay: −lr·u∘φ remains
    torch.testing.assert_close(steps["indicator_ratio"], steps[None] * 12 / 13, rtol=1e-12, atol=1e-15)


# Hand-made states with misaligned coordinates. p = 1, lr = 0.1, wd = 0.2, so p ← 0.98 − 0.1·u∘φ.
def _one_step(opt_cls, state: dict, grad, **kw) -> tuple[torch.Tensor, torch.optim.Optimizer]:
    p = torch.nn.Parameter(torch.ones(4, dtype=F64))
    opt = opt_cls([p], lr=0.1, weight_decay=0.2, **kw)
    opt.state[p].update({k: (v.clone() if torch.is_tensor(v) else v) for k, v in state.items()})
    p.grad = grad
    opt.step()
    return p.detach(), opt


def test_masked_lion_step_by_hand():
    # c = 0.9·m + 0.1·g = [0.95, −0.85, 1.75, −1.85] → u = [1, −1, 1, −1]; u·g = [+, −, −, +]
    state = {"exp_avg": t(1.0, -1.0, 2.0, -2.0)}
    g = t(0.5, 0.5, -0.5, -0.5)
    plain, _ = _one_step(Lion, state, g)
    torch.testing.assert_close(plain, t(0.88, 1.08, 0.88, 1.08))
    masked, opt = _one_step(Lion, state, g, cautious="indicator_mean")  # mask [2, 0, 0, 2]
    torch.testing.assert_close(masked, t(0.78, 0.98, 0.98, 1.18))
    assert opt.diagnostics()["masked_fraction"] == 0.5
    # the momentum is the base's: m = 0.99·m + 0.01·g, whatever the mask
    torch.testing.assert_close(opt.state[next(iter(opt.state))]["exp_avg"], t(0.995, -0.985, 1.975, -1.985))


def test_masked_adamw_step_by_hand():
    # β = (0.5, 0.5), eps 0, second step: m = [1, 0, 1, −1], v = 1, m̂ / √v̂ = m·√0.75/0.75 = m / √0.75
    state = {"step": 1, "exp_avg": t(1.0, -1.0, 3.0, -1.0), "exp_avg_sq": t(1.0, 1.0, 1.0, 1.0)}
    g = t(1.0, 1.0, -1.0, -1.0)
    kw = dict(betas=(0.5, 0.5), eps=0.0)
    s = 1 / math.sqrt(0.75)
    plain, _ = _one_step(AdamW, state, g, **kw)
    torch.testing.assert_close(plain, t(0.98 - 0.1 * s, 0.98, 0.98 - 0.1 * s, 0.98 + 0.1 * s))
    masked, opt = _one_step(AdamW, state, g, cautious="indicator_mean", **kw)  # u·g = [+, 0, −, +] → [2, 0, 0, 2]
    torch.testing.assert_close(masked, t(0.98 - 0.2 * s, 0.98, 0.98, 0.98 + 0.2 * s))
    assert opt.diagnostics()["masked_fraction"] == 0.5
    xor, _ = _one_step(AdamW, state, g, cautious="signxor", **kw)  # the 0 is kept: mask [4/3, 4/3, 0, 4/3]
    torch.testing.assert_close(xor, t(0.98 - 0.1 * s * 4 / 3, 0.98, 0.98, 0.98 + 0.1 * s * 4 / 3))


def test_masked_sgd_step_by_hand():
    # μ = 0.5: b = 0.5·[1, −1, 3, −1] + g = [1.5, 0.5, 0.5, −1.5]; u·g = [+, +, −, +] → mask 4/3·[1, 1, 0, 1]
    state = {"momentum_buffer": t(1.0, -1.0, 3.0, -1.0)}
    g = t(1.0, 1.0, -1.0, -1.0)
    plain, _ = _one_step(SGD, state, g, momentum=0.5)
    torch.testing.assert_close(plain, t(0.83, 0.93, 0.93, 1.13))
    masked, opt = _one_step(SGD, state, g, momentum=0.5, cautious="indicator_mean")
    torch.testing.assert_close(masked, t(0.98 - 0.2, 0.98 - 0.2 / 3, 0.98, 0.98 + 0.2))
    assert opt.diagnostics()["masked_fraction"] == 0.25
    # Nesterov: u = g + 0.5·b = [1.75, 1.25, −0.75, −1.75], aligned everywhere → the mask changes nothing
    nesterov, _ = _one_step(SGD, state, g, momentum=0.5, nesterov=True)
    masked_nesterov, _ = _one_step(SGD, state, g, momentum=0.5, nesterov=True, cautious="indicator_mean")
    torch.testing.assert_close(nesterov, t(0.805, 0.855, 1.055, 1.155))
    torch.testing.assert_close(masked_nesterov, nesterov, rtol=1e-15, atol=0)


def test_weight_decay_is_not_masked():
    """Everything masked: only the decay p·(1 − lr·λ) moves the parameters."""
    masked, opt = _one_step(Lion, {"exp_avg": t(1.0, 1.0, -1.0, -1.0)}, t(-1.0, -1.0, 1.0, 1.0),
                            cautious="indicator_mean")
    torch.testing.assert_close(masked, torch.full((4,), 0.98, dtype=F64), rtol=1e-15, atol=0)
    assert opt.diagnostics()["masked_fraction"] == 1.0


def test_diagnostics_average_since_last_call():
    p = torch.nn.Parameter(torch.zeros(4, dtype=F64))
    opt = Lion([p], lr=0.1, cautious="indicator")
    opt.state[p]["exp_avg"] = t(1.0, 1.0, -1.0, -1.0)
    p.grad = t(1.0, -1.0, -1.0, 1.0)  # u = [1, 1, −1, −1] → 2 of 4 masked
    opt.step()
    p.grad = t(1.0, 1.0, -1.0, -1.0)  # m has kept its sign pattern → 0 of 4 masked
    opt.step()
    assert opt.diagnostics() == {"masked_fraction": 0.25}
    assert opt.diagnostics() == {"masked_fraction": 0.0}
