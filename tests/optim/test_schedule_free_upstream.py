"""``inner_momentum`` against the upstream schedule_free repository (after 1.4.1, not on PyPI), through golden
trajectories written once by ``tests/fixtures/make_schedule_free_upstream.py`` from the upstream files at the
commit it records: the same cases, replayed with the library's classes, agree at every checkpoint (float64,
rtol 1e-10 as the comparisons with the package)."""
from __future__ import annotations

import pytest
import schedulefree
import torch

from research_optim.optim.schedule_free import AdamWScheduleFree
from research_optim.optim.schedule_free_reference import AdamWScheduleFreeReference
from tests.fixtures.make_schedule_free_upstream import CASES, COMMIT, FIXTURE, STEPS, trajectory

GOLDEN = torch.load(FIXTURE)  # tensors only (weights_only)


def test_fixture_records_the_upstream_commit():
    assert GOLDEN["commit"] == COMMIT and GOLDEN["steps"] == STEPS >= 100 and set(GOLDEN["cases"]) == set(CASES)


@pytest.mark.parametrize("name, implementation", [
    (name, implementation) for name, (kind, _) in CASES.items()
    for implementation in (("reference", "foreach", "compiled") if kind == "fast" else ("reference",))])
def test_inner_momentum_matches_upstream(name, implementation):
    kind, kwargs = CASES[name]
    if kind == "reference":
        ours = trajectory(lambda params: AdamWScheduleFreeReference(params, **kwargs))
    else:
        ours = trajectory(lambda params: AdamWScheduleFree(params, implementation=implementation, **kwargs))
    rtol = 1e-6 if implementation == "compiled" else 1e-10  # compiled: equal up to rounding (float32 contract)
    torch.testing.assert_close(ours, GOLDEN["cases"][name], rtol=rtol, atol=rtol * 1e-2)


def test_inner_momentum_changes_the_trajectory():
    """Without it, the package's 1.4.1 AdamWScheduleFree — which the golden trajectory must not equal."""
    kwargs = {k: v for k, v in CASES["fast"][1].items() if k != "inner_momentum"}
    plain = trajectory(lambda params: schedulefree.AdamWScheduleFree(params, **kwargs))
    assert not torch.allclose(plain, GOLDEN["cases"]["fast"], rtol=1e-3)
    assert torch.allclose(plain, trajectory(lambda params: AdamWScheduleFree(params, **kwargs)), rtol=1e-10)
