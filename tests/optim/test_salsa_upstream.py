"""SaLSA against the upstream repository's newest SaLSA.py (not on PyPI), run beside it.

``tests/fixtures/salsa_upstream_717b41c.py`` is the upstream file verbatim at the commit it records; the problems of
``tests/fixtures/salsa_upstream.py`` run with it and with ``SaLSA(compat="717b41c")``, which must match every step's
loss, step size, cadence and parameters exactly (float64).
"""
from __future__ import annotations

import pytest
import torch

from research_optim.optim.salsa import SaLSA
from tests.fixtures import salsa_upstream_717b41c
from tests.fixtures.salsa_upstream import COMMIT, PROBLEMS, STEPS, problem, trajectory, upstream_trajectory


pytestmark = pytest.mark.usefixtures("float64_default")


def ours(name: str, **kwargs) -> dict:
    return trajectory(name, lambda params, **problem_kwargs: SaLSA(params, **problem_kwargs, **kwargs),
                      lambda opt: opt.cadence())


def test_the_copy_names_its_commit_and_the_problems_cover_the_guard():
    with open(salsa_upstream_717b41c.__file__) as f:
        assert f"at commit {COMMIT} of" in f.read()
    assert STEPS >= 100
    # the "exact" problem's loss falls below the 1e-8 guard, where 0.1.0 and the newer upstream part ways
    assert (upstream_trajectory("exact")["loss"] < 1e-8).sum() > 10


@pytest.mark.parametrize("implementation", ["reference", "foreach"])
@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_compat_717b41c_reproduces_upstream_bit_for_bit(name, implementation):
    upstream, run = dict(upstream_trajectory(name)), ours(name, compat="717b41c", implementation=implementation)
    # upstream records the cadence a step used; ours (after the step) is the one the next step uses
    run["cadence"], upstream["cadence"] = run["cadence"][:-1], upstream["cadence"][1:]
    for key in ("loss", "step_size", "cadence"):
        mismatch = (run[key] != upstream[key]).nonzero()
        assert mismatch.numel() == 0, f"{key} differs from step {mismatch[0].item() + 1} on"
    assert torch.equal(run["params"], upstream["params"])


def test_the_loss_guard_is_what_separates_0_1_0_from_upstream():
    """On the problem whose loss falls below 1e-8, compat="0.1.0" (search at any nonzero loss) leaves upstream's
    trajectory at the first step below 1e-8 — and agrees with it before."""
    upstream, run = upstream_trajectory("exact"), ours("exact", compat="0.1.0")
    first_below = int((upstream["loss"] < 1e-8).nonzero()[0])
    differs = (run["step_size"] != upstream["step_size"]).nonzero()
    assert differs.numel() > 0 and int(differs[0]) >= first_below
    assert torch.equal(run["loss"][:first_below + 1], upstream["loss"][:first_below + 1])


def test_parameters_without_gradient_decay_only_in_compat_mode():
    """Upstream decays every parameter; the default, like torch's optimizers, leaves one without a gradient alone."""
    start = problem("weight_decay")[0].unused.detach().clone()
    for compat, moved in ((None, False), ("717b41c", True)):
        model, closure_for = problem("weight_decay")
        opt = SaLSA(model.parameters(), weight_decay=0.01, compat=compat)
        for t in range(5):
            opt.step(closure_for(t))
        assert model.unused.grad is None
        assert torch.equal(model.unused.detach(), start) is not moved


def test_default_refuses_a_negative_loss():
    """Below the guard a negative loss would never be searched while η grows: said, not done (compat: upstream's)."""
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    with pytest.raises(ValueError, match="loss is negative.*non-negative"):
        SaLSA([p]).step(lambda: (p ** 2).sum() - 10.0)
    SaLSA([p], compat="717b41c").step(lambda: (p ** 2).sum() - 10.0)


@pytest.mark.parametrize("compat,searches", [(None, False), ("717b41c", False), ("0.1.0", True)])
def test_loss_guard(compat, searches):
    """A loss below 1e-8 is not searched (the step is taken at η_try), except by 0.1.0 (any nonzero loss)."""
    p = torch.nn.Parameter(torch.tensor([1e-5, -2e-5]))
    opt = SaLSA([p], compat=compat)
    opt.step(lambda: (p ** 2).sum())
    assert (opt.diagnostics()["forwards"] > 1) is searches
