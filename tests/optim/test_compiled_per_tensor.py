"""The compiled path steps one tensor per call with one graph per rule variant, whatever the model.

On a mixed model — tensors on both sides of inductor's 4,096-element reduction split, shapes of 1 to 4 dimensions,
a one-element tensor (eager: dynamo specialises sizes 0 and 1) and a non-contiguous one (eager) — the compiled path
equals the reference for every rule with a compiled path and every cautious φ; a state_dict moves between the
compiled and the reference path mid-run and the run continues equal; a second model with other shapes and another
tensor count compiles nothing; ``"auto"`` compiles the big tensors and steps the small ones eagerly in the same step.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch._dynamo.utils import counters

from research_optim.optim.adamw import AdamW
from research_optim.optim.cautious import PHI_FUNCTIONS
from research_optim.optim.implementation import COMPILE_MIN_NUMEL, compilable
from research_optim.optim.lion import Lion
from research_optim.optim.schedule_free import AdamWScheduleFree, AdamWScheduleFreePaper, SGDScheduleFree
from research_optim.optim.sgd import SGD
from tests.optim.harness import make_params, run_side_by_side

pytestmark = [pytest.mark.slow,  # compiles
              pytest.mark.skipif(not torch._dynamo.is_dynamo_supported(), reason="torch.compile unavailable"),
              pytest.mark.usefixtures("compilation_on")]

# compiled vs reference on tensors of thousands of elements: as F32, but some coordinate passes near 0, where one
# rounding of the O(1) operands (an ulp of 1 is 1.2e-7) is the whole absolute difference — the φ means are summed in
# another order (inductor's cascade vs torch's), products are written out where the reference passes alpha= and lerp
# as start + w·(end − start)
MIXED_F32 = dict(dtype=torch.float32, rtol=1e-6, atol=1e-6)
MIXED = ((70, 70), (7,), (300, 20), (1,), (5, 3), (4097,), (2, 3, 4, 5), (64, 9))
OTHER_MODEL = ((9, 600), (3,), (11, 13, 17), (4096,), (2,), (5000,))


def _step_both(optimizers, fast, slow, grads):
    """One step of the fast and the slow optimizer with the same gradients; their parameters stay equal."""
    for params, opt in zip((fast, slow), optimizers):
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, rtol=MIXED_F32["rtol"], atol=MIXED_F32["atol"])


def _train_mode(opt):
    opt.train()
    return opt


def _non_contiguous_first(build):
    """``build`` over parameters whose first one (a matrix) has transposed strides, same values: the eager path
    steps it."""
    def make(ps):
        ps[0].data = ps[0].data.t().contiguous().t()
        return build(ps)
    return make


PHIS = [None, *sorted(PHI_FUNCTIONS)]
DIRECTION = {
    "lion": lambda ps, **kw: Lion(ps, lr=1e-3, **kw),
    "adamw": lambda ps, **kw: AdamW(ps, lr=1e-2, **kw),
    "sgd-nesterov": lambda ps, **kw: SGD(ps, lr=1e-2, momentum=0.9, nesterov=True, **kw),
    "sgd": lambda ps, **kw: SGD(ps, lr=1e-2, momentum=0.9, **kw),
    "sgd-no-momentum": lambda ps, **kw: SGD(ps, lr=1e-2, momentum=0.0, **kw),
}
SCHEDULE_FREE = {
    "sf_adamw": lambda ps, **kw: _train_mode(AdamWScheduleFree(ps, lr=1e-2, warmup_steps=3, **kw)),
    "sf_adamw-inner-momentum": lambda ps, **kw: _train_mode(
        AdamWScheduleFree(ps, lr=1e-2, warmup_steps=3, inner_momentum=0.9, **kw)),
    "sf_adamw-paper": lambda ps, **kw: _train_mode(AdamWScheduleFreePaper(ps, lr=1e-2, warmup_steps=3, **kw)),
    "sf_sgd": lambda ps, **kw: _train_mode(SGDScheduleFree(ps, lr=1e-2, warmup_steps=3, **kw)),
}
RULES = {**DIRECTION, **SCHEDULE_FREE}
# a cautious mask only where it means something: over a momentum (Schedule-Free: the inner one; else refused)
MASKED = {"lion", "adamw", "sgd-nesterov", "sgd", "sf_adamw-inner-momentum"}
RULE_PHIS = [(rule, phi) for rule in sorted(RULES) for phi in (PHIS if rule in MASKED else [None])]


def _options(phi):
    return dict(weight_decay=0.1, cautious=phi, cautious_factor=0.3 if phi == "soft" else 0.0)


@pytest.mark.parametrize("rule, phi", RULE_PHIS)
def test_compiled_equals_reference_on_a_mixed_model(rule, phi):
    make = lambda impl: _non_contiguous_first(lambda ps: RULES[rule](ps, implementation=impl, **_options(phi)))
    run_side_by_side(make("compiled"), make("reference"), steps=8, shapes=MIXED, **MIXED_F32)


def _train(make, implementations, steps_each, params, seed):
    """Train ``params`` ``steps_each`` steps per implementation in turn, moving the state_dict to a new optimizer
    of the next implementation each time."""
    gen = torch.Generator().manual_seed(seed)
    opt = None
    for impl in implementations:
        moved = make(params, impl)
        if opt is not None:
            moved.load_state_dict(copy.deepcopy(opt.state_dict()))  # load_state_dict alone would share tensors
        opt = moved
        for _ in range(steps_each):
            for p in params:
                p.grad = p.detach() + torch.randn(p.shape, generator=gen)
            opt.step()


@pytest.mark.parametrize("rule", ["lion", "adamw", "sf_adamw-inner-momentum"])
def test_a_state_dict_moves_between_compiled_and_reference_mid_run(rule):
    make = lambda ps, impl: RULES[rule](ps, implementation=impl, **_options("indicator_mean"))
    init = make_params(MIXED, dtype=torch.float32)
    moved, reference = ([torch.nn.Parameter(t.clone()) for t in init] for _ in range(2))
    _train(make, ["compiled", "reference", "compiled"], 4, moved, seed=1)
    _train(make, ["reference"], 12, reference, seed=1)
    for a, b in zip(moved, reference):
        torch.testing.assert_close(a, b, rtol=MIXED_F32["rtol"], atol=MIXED_F32["atol"])


def test_one_graph_per_rule_variant_whatever_the_model():
    """A second model (other shapes, another tensor count) reuses the graphs of the first: no new compile. The first
    compiles at most two graphs per variant (inductor's CPU code sums floats with a cascade helper only above 4,096
    elements); without a reduction (no cautious mask) one."""
    make = lambda phi: lambda ps: Lion(ps, lr=1e-3, betas=(0.8, 0.97), weight_decay=0.1, cautious=phi,
                                       cautious_factor=0.2, implementation="compiled")
    for phi, most in [("soft", 2), (None, 1)]:
        before = counters["stats"]["unique_graphs"]
        run_side_by_side(make(phi), make(phi), steps=2, shapes=MIXED, dtype=torch.float32, rtol=0.0, atol=0.0)
        assert counters["stats"]["unique_graphs"] - before <= most  # both optimizers are the same variant
        after_first = counters["stats"]["unique_graphs"]
        run_side_by_side(make(phi), make(phi), steps=2, shapes=OTHER_MODEL, dtype=torch.float32, rtol=0.0,
                         atol=0.0)
        assert counters["stats"]["unique_graphs"] == after_first


def test_which_tensors_the_compiled_step_takes():
    assert compilable([torch.zeros(2)]) and not compilable([torch.zeros(1)])  # dynamo specialises sizes 0 and 1
    assert not compilable([torch.zeros(4, 3).t()])
    assert not compilable([torch.zeros(4), torch.zeros(8)[::2]])  # a non-contiguous gradient


def test_after_the_first_call_of_a_kind_its_graph_runs_without_dynamo(monkeypatch):
    """Dynamo runs for the first call of each kind (rule variant, dtypes, size regime): later steps call the graph it
    recorded directly (``optim.compiled``), equal to the reference all along."""
    from research_optim.optim import compiled

    make = lambda ps, impl: AdamW(ps, lr=1e-2, weight_decay=0.1, cautious="indicator_mean", implementation=impl)
    init = make_params(MIXED, dtype=torch.float32)
    fast, slow = ([torch.nn.Parameter(t.clone()) for t in init] for _ in range(2))
    optimizers = make(fast, "compiled"), make(slow, "reference")
    gen = torch.Generator().manual_seed(3)
    for step in range(6):
        if step == 1:
            monkeypatch.setattr(compiled, "_dynamo", lambda fn: pytest.fail("a later step went through dynamo"))
        _step_both(optimizers, fast, slow, [torch.randn(p.shape, generator=gen) for p in fast])


def test_a_graphs_inputs_are_read_in_parts_at_their_own_rates():
    """``compiled.Readers``: what the parameter and its state give is read once, what the step's shared arguments
    give once per step, the gradient at every call — merged back into dynamo's order of the graph's inputs."""
    from research_optim.optim.compiled import Readers

    sources = ["L['s']['beta']", "L['state']['m'].size()[0]", "L['state']['m']", "L['g']", "L['lr']", "L['p']",
               "L['g'].size()[0]"]
    readers = Readers.of(sources, kept=("p", "state"), each="g")
    p, m, g = torch.zeros(3), torch.ones(3), torch.full((5,), 2.0)
    kept = readers.kept({"p": p, "state": {"m": m}})
    shared = readers.shared({"s": {"beta": 0.9}, "lr": 0.1})
    assert kept == (3, m, p) and shared == (0.9, 0.1)
    inputs = readers.merge(kept, shared, g)
    assert inputs[1:] == [3, m, g, 0.1, p, 5] and inputs[0] == 0.9


_SCALE = torch.tensor(2.0)


def _scale_by_a_global_(x: torch.Tensor) -> None:
    x.mul_(_SCALE)  # a graph input that is not among the call's arguments


def test_a_graph_whose_inputs_are_not_all_arguments_keeps_going_through_dynamo():
    from research_optim.optim import compiled

    x = torch.ones(5)
    for _ in range(3):
        compiled.call(_scale_by_a_global_, "a kind", x)
    assert (_scale_by_a_global_, "a kind") not in compiled._direct
    torch.testing.assert_close(x, torch.full((5,), 8.0))


def _count_calls_(x: torch.Tensor, box: dict) -> None:
    box["calls"] = box.get("calls", 0) + 1  # a side effect on an argument, which dynamo replays outside the graph
    x.add_(1)


def test_a_call_with_side_effects_outside_its_graph_keeps_going_through_dynamo():
    from research_optim.optim import compiled

    x, box = torch.zeros(5), {}
    for _ in range(3):
        compiled.call(_count_calls_, "a kind", x, box)
    assert box["calls"] == 3 and (_count_calls_, "a kind") not in compiled._direct
    torch.testing.assert_close(x, torch.full((5,), 3.0))


def _sizes_compiled(monkeypatch, module) -> list[int]:
    """A list that the sizes of the tensors ``module``'s optimizers step with the compiled step are appended to."""
    sizes, original = [], module.compiled_each

    def compiled_each(*args, **kwargs):
        stepped, masked = original(*args, **kwargs)
        sizes.extend(p.numel() for p in stepped)
        return stepped, masked

    monkeypatch.setattr(module, "compiled_each", compiled_each)
    return sizes


def test_auto_compiles_every_tensor_of_a_big_group_and_leaves_a_small_group_eager(monkeypatch):
    """A compiled call costs about as much host time as a small tensor's foreach step, so under ``"auto"`` a group of
    at least ``COMPILE_MIN_NUMEL`` elements compiles its small tensors (biases, norms) too, with or without a
    cautious mask — all but a 1-element one —, equal to the reference; a smaller group never compiles."""
    from research_optim.optim import direction

    sizes = _sizes_compiled(monkeypatch, direction)
    big = (COMPILE_MIN_NUMEL // 1024, 1024)
    for phi in ("indicator_mean", None):
        make = lambda impl: lambda ps: Lion(ps, lr=1e-3, weight_decay=0.1, cautious=phi, implementation=impl)
        sizes.clear()
        run_side_by_side(make("auto"), make("reference"), steps=2, shapes=[big, (300,), (1,), (7, 3)], **MIXED_F32)
        assert sorted(sizes) == [21, 21, 300, 300, COMPILE_MIN_NUMEL, COMPILE_MIN_NUMEL]
        sizes.clear()
        run_side_by_side(make("auto"), make("reference"), steps=2, shapes=[(300,), (7, 3)], **MIXED_F32)
        assert sizes == []


def test_a_rule_may_leave_its_small_tensors_to_foreach_under_auto_and_compiled_takes_them(monkeypatch):
    """Schedule-Free SGD's rule (u = g) leaves tensors under ``auto_compiled_min_numel`` to the foreach path under
    ``"auto"`` (three ops cost less host time than a compiled call there); ``"compiled"`` compiles every tensor it
    can. Both equal to the reference."""
    from research_optim.optim import schedule_free

    sizes = _sizes_compiled(monkeypatch, schedule_free)
    big = (COMPILE_MIN_NUMEL // 1024, 1024)
    assert SGDScheduleFree.rule.auto_compiled_min_numel > 300 * 20 and Lion.rule.auto_compiled_min_numel <= 2
    make = lambda impl: lambda ps: _train_mode(SGDScheduleFree(ps, lr=0.5, weight_decay=0.1, implementation=impl))
    big_only, every = [COMPILE_MIN_NUMEL] * 2, [21, 21, 6000, 6000] + [COMPILE_MIN_NUMEL] * 2  # 2 steps each
    for impl, stepped in (("auto", big_only), ("compiled", every)):
        sizes.clear()
        run_side_by_side(make(impl), make("reference"), steps=2, shapes=[big, (300, 20), (1,), (7, 3)], **MIXED_F32)
        assert sorted(sizes) == stepped, impl


@pytest.mark.parametrize("rule", ["lion", "sf_sgd"])
def test_the_tensors_left_to_the_eager_path_step_before_the_compiled_ones(monkeypatch, rule):
    """Host code runs slower right after a kernel that streamed a large tensor, so a step runs the tensors left to
    the eager path first, then the compiled calls in the parameters' order; equal to the reference."""
    from research_optim.optim import compiled, direction, schedule_free

    events = []
    module = direction if rule in DIRECTION else schedule_free
    original_each, original_run_all = module.compiled_each, compiled.run_all

    def compiled_each(fn, owner, params, tensors_of, args_of, eager_step, *rest):
        def logged(left):
            events.append(("eager", [p.numel() for p in left]))
            eager_step(left)
        return original_each(fn, owner, params, tensors_of, args_of, logged, *rest)

    def run_all(calls):
        events.append(("compiled", [max(x.numel() for x in inputs if isinstance(x, torch.Tensor))
                                    for _, inputs in calls]))
        return original_run_all(calls)

    monkeypatch.setattr(module, "compiled_each", compiled_each)
    monkeypatch.setattr(compiled, "run_all", run_all)
    shapes = [(50, 40), (30,), (600,), (1,), (7, 3), (40, 50)]
    make = lambda impl: lambda ps: RULES[rule](ps, implementation=impl, **_options("indicator_mean" if rule in MASKED
                                                                                   else None))
    run_side_by_side(make("compiled"), make("reference"), steps=3, shapes=shapes, **MIXED_F32)
    # from the second step on, every call runs through its recorded graph
    assert events[-2:] == [("eager", [1]), ("compiled", [2000, 30, 600, 21, 2000])]


def _state_tensors(opt):
    return [t for state in opt.state_dict()["state"].values() for t in state.values() if isinstance(t, torch.Tensor)]


@pytest.mark.parametrize("rule", ["lion", "adamw", "sf_adamw-inner-momentum"])
def test_new_state_or_parameter_storage_mid_run_reaches_the_compiled_path(rule):
    """The compiled path keeps each parameter's flat views from step to step: after ``p.data = ...`` (new storage),
    a state tensor replaced or given new storage, and a ``load_state_dict`` (new state tensors; the old ones' views
    are let go at once) mid-run, it steps the new tensors, equal to the reference."""
    make = lambda ps, impl: RULES[rule](ps, implementation=impl, **_options("indicator_mean"))
    init = make_params(MIXED, dtype=torch.float32)
    fast, slow = ([torch.nn.Parameter(t.clone()) for t in init] for _ in range(2))
    optimizers = make(fast, "compiled"), make(slow, "reference")
    gen = torch.Generator().manual_seed(5)
    for step in range(7):
        for params, opt in zip((fast, slow), optimizers):
            if step == 2:
                for p in params:
                    p.data = p.data.clone()
            if step == 4:
                opt.load_state_dict(copy.deepcopy(opt.state_dict()))
                assert not getattr(opt, "_compiled_views", None)  # the old state's views are let go at once
            for state in opt.state.values():  # a state tensor replaced (step 3), or given new storage (step 5)
                for key, t in list(state.items()):
                    if isinstance(t, torch.Tensor) and t.dim() > 0 and step in (3, 5):
                        if step == 3:
                            state[key] = t.clone()
                        else:
                            t.data = t.data.clone()
        grads = [torch.randn(p.shape, generator=gen) for p in fast]
        for params, opt in zip((fast, slow), optimizers):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            opt.step()
        for a, b in zip([*fast, *_state_tensors(optimizers[0])], [*slow, *_state_tensors(optimizers[1])]):
            torch.testing.assert_close(a, b, rtol=MIXED_F32["rtol"], atol=MIXED_F32["atol"])


def test_a_compiler_failure_mid_step_leaves_every_tensor_stepped_once(monkeypatch):
    """The calls of a step are bound to their graphs first and run after; when a later tensor's first call of its
    kind fails to compile, the bound ones still run once and the rest go eager: every tensor is stepped once."""
    from research_optim.optim import compiled
    from research_optim.optim.implementation import set_compile_enabled

    real = compiled._dynamo

    def failing_for_float64(fn):
        def run(*args):
            if any(isinstance(a, torch.Tensor) and a.dim() > 0 and a.dtype == torch.float64 for a in args):
                raise torch._dynamo.exc.InternalTorchDynamoError("no float64 compiler here")
            return real(fn)(*args)
        return run

    monkeypatch.setattr(compiled, "_dynamo", failing_for_float64)
    monkeypatch.setattr(compiled, "_direct", {})  # the float32 kind's first call records, its second is bound
    shapes_dtypes = [((300,), torch.float32), ((40,), torch.float32), ((200,), torch.float64), ((30,), torch.float32)]
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(shape, generator=gen, dtype=dtype) for shape, dtype in shapes_dtypes]
    fast, slow = ([torch.nn.Parameter(t.clone()) for t in init] for _ in range(2))
    optimizers = (AdamW(fast, lr=1e-2, weight_decay=0.1, implementation="compiled"),
                  AdamW(slow, lr=1e-2, weight_decay=0.1, implementation="reference"))
    try:
        with pytest.warns(RuntimeWarning, match="eager optimizer steps"):
            for _ in range(3):
                _step_both(optimizers, fast, slow, [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in fast])
        assert all(optimizers[0].state[p]["step"] == 3 for p in fast)
    finally:
        set_compile_enabled(True)


def test_later_calls_run_inductors_code_directly_and_bump_the_version_counters():
    """After the recording call, a graph runs inductor's code without aot_autograd's wrappers, doing their one job
    itself: the version counters of the tensors it writes move, so autograd still refuses a backward through a
    parameter that a step changed in place."""
    from research_optim.optim import compiled

    p = torch.nn.Parameter(torch.randn(1000))
    opt = AdamW([p], lr=1e-2, implementation="compiled")
    for _ in range(2):  # the first call records the graph, the second goes direct
        p.grad = torch.randn(1000)
        opt.step()
    graphs = {id(g): g for (fn, _), g in compiled._direct.items() if fn.__module__.endswith("direction")}
    assert graphs and all(g.inner is not None and g.bumps for g in graphs.values())
    loss = (p * p).sum()  # saves p for the backward
    before = p._version
    p.grad = torch.randn(1000)
    opt.step()
    assert p._version > before
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def _add_one_and_view_(x: torch.Tensor) -> torch.Tensor:
    x.add_(1)
    return x.view(2, -1)  # an output aliasing an input: aot_autograd's wrappers rebuild the view


def test_a_graph_whose_wrappers_do_more_than_pass_through_keeps_them():
    from research_optim.optim import compiled

    x = torch.zeros(6)
    outs = [compiled.call(_add_one_and_view_, "a kind", x) for _ in range(3)]
    graph = compiled._direct.get((_add_one_and_view_, "a kind"))
    assert graph is not None and graph.inner is None
    torch.testing.assert_close(x, torch.full((6,), 3.0))
    assert outs[-1].shape == (2, 3) and outs[-1].data_ptr() == x.data_ptr()
