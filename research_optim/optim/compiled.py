"""``torch.compile`` for a per-tensor step, with dynamo's per-call cost paid once per kind of call.

A compiled function called through dynamo costs ~170 µs of host time per call on a CPU (frame evaluation, guards,
runtime wrappers) — more than the kernel of a 100k-element tensor, and paid once per tensor per step. So
:func:`call` goes through dynamo only for the first call of each *kind* (``kind``: everything dynamo's guards can
depend on — static arguments, dtypes, devices, dict keys, the size regimes inductor specialises on; the caller
builds it). That call records the graph that served it (the inductor backend is wrapped to do so) and how the
graph's inputs are read from the call's arguments (dynamo's own source expressions, e.g. ``L['state']['exp_avg']``
or ``L['p'].size()[0]``); later calls of the same kind run that graph directly. The record is checked on the call
that makes it — the expressions must yield exactly the inputs dynamo passed, the result must be the graph's output
and no argument's container or attribute may have changed (a side effect dynamo would replay outside the graph) —
and a kind whose record does not check out keeps going through dynamo. The same call watches aot_autograd's runtime
wrappers around inductor's code; where they only pass the inputs through and bump version counters, later calls
skip them (:class:`_Graph`): a kernel over a large tensor leaves the caches cold, and those five Python layers then
cost tens of µs per tensor. A caller that makes the same kind of call for many tensors reads a graph's inputs in
parts (:class:`Readers`): from the arguments that stay the same between steps once, from those a step shares once
per step, and only the gradient at every call.

On a CPU, the C++ kernels of these graphs mark their one-element buffers (hyperparameters, a mask's count)
``__restrict__`` (:func:`restrict_scalars`), so that their loads and arithmetic leave the loop over the elements.
"""
from __future__ import annotations

import contextlib
import inspect
import operator
import re
import warnings
from typing import Any, Callable, Hashable

import torch

from research_optim.optim import cpu_probe

__all__ = ["FAILED", "RECOMPILE_LIMIT", "Readers", "call", "graph", "parameters", "run_all"]

RECOMPILE_LIMIT = 128  # per compiled function: rules × φ × flags × dtypes (× 2 size regimes); dynamo's cap is 8
FAILED = object()  # returned by :func:`call` when the compiler failed and nothing was updated


class _Graph:
    """One compiled graph, callable without dynamo: ``inputs`` reads its inputs from the call's arguments.

    ``compiled`` is inductor's code inside aot_autograd's runtime wrappers, five Python layers that cost more host
    time than a kernel over a small tensor. Where the call that records the graph shows them doing nothing but pass
    the inputs through, return the outputs and bump the version counters of the inputs the graph writes
    (:meth:`observe`), later calls do that bump and call inductor's code themselves (``inner``)."""

    def __init__(self, compiled: Callable[..., Any], sources: list[str], n_outputs: int) -> None:
        self.compiled, self.n_outputs, self.sources = compiled, n_outputs, sources
        self.inputs = eval(f"lambda L: [{', '.join(sources)}]", {})  # dynamo's source expressions over the locals
        self.output_code = _output_code(compiled)
        self.inner: Callable[[list[Any]], Any] | None = None
        self.bumps: tuple[int, ...] = ()  # the inputs whose version counters the wrappers bump
        self._readers: dict[tuple[Any, ...], Readers] = {}

    def __call__(self, inputs: list[Any]) -> Any:
        """The graph on ``inputs`` (its input list, which inductor's code empties); its output or None."""
        return run_all([(self, inputs)])[0]

    def run(self, inputs: list[Any], bumped: list[Any]) -> Any:
        """:meth:`__call__` leaving the version bumps of the skipped wrappers to the caller: their inputs are appended
        to ``bumped``."""
        if self.inner is not None and not torch.compiler.is_compiling():
            bumped += [inputs[i] for i in self.bumps]
            out = self.inner(inputs)
        else:
            out = self.compiled(*inputs)  # as dynamo calls it
        return out[0] if self.n_outputs else None

    def readers(self, kept: tuple[str, ...], each: str) -> Readers:
        """The inputs read in three parts (:class:`Readers`), for calls whose arguments named ``kept`` stay the same
        from step to step, ``each`` changes at every call and the others are shared by the calls of a step."""
        key = kept, each
        if key not in self._readers:
            self._readers[key] = Readers.of(self.sources, kept, each)
        return self._readers[key]

    def observe(self, args: tuple[Any, ...]) -> Any:
        """``compiled(*args)``, watching inductor's code inside: if the wrappers passed it exactly ``args`` and
        returned exactly its outputs, later calls go to it directly (``inner``)."""
        code = self.output_code
        if code is None:
            return self.compiled(*args)
        original, seen = code.current_callable, {}

        def spy(inputs: list[Any]) -> Any:
            seen["inputs"], seen["versions"] = list(inputs), _versions(inputs)
            seen["out"] = original(inputs)
            seen["after"] = _versions(seen["inputs"])
            return seen["out"]

        before = _versions(args)
        code.current_callable = spy
        try:
            out = self.compiled(*args)
        finally:
            code.current_callable = original
        if ("out" in seen and len(seen["inputs"]) == len(args) and all(a is b for a, b in zip(seen["inputs"], args))
                and isinstance(out, (list, tuple)) and len(out) == len(seen["out"])
                and all(a is b for a, b in zip(out, seen["out"]))):
            after = _versions(args)
            # the bumps of the wrappers: the version changes not made inside inductor's code
            self.bumps = tuple(i for i, (v0, v1, w0, w1) in enumerate(zip(before, after, seen["versions"],
                                                                           seen["after"]))
                               if v0 is not None and v1 - v0 > w1 - w0)
            self.inner = original
        return out


def run_all(calls: list[tuple[_Graph, list[Any]]]) -> list[Any]:
    """Each graph on its input list, back to back: their outputs (None for a graph without). The version counters
    that the skipped wrappers would bump are bumped once, after the last call."""
    bumped: list[Any] = []
    outs = [graph.run(inputs, bumped) for graph, inputs in calls]
    if bumped:
        torch._C._increment_version(bumped)
    return outs


_ROOT = re.compile(r"L\['(\w+)'\]")


class Readers:
    """A graph's input list built from parts read at different rates: ``kept(L)`` from the arguments that stay the
    same between steps (a parameter and its state: read once), ``shared(L)`` from those shared by every call of a
    step (hyperparameters: read once per step) and ``merge(K, S, x)`` the list, given those two and the one argument
    that changes at every call (the gradient)."""

    __slots__ = ("kept", "shared", "merge")

    def __init__(self, kept: Callable[[dict[str, Any]], tuple[Any, ...]],
                 shared: Callable[[dict[str, Any]], tuple[Any, ...]],
                 merge: Callable[[tuple[Any, ...], tuple[Any, ...], Any], list[Any]]) -> None:
        self.kept, self.shared, self.merge = kept, shared, merge

    @classmethod
    def of(cls, sources: list[str], kept: tuple[str, ...], each: str) -> Readers:
        """From dynamo's source expressions, each rooted at an argument (``L['name']...``: :func:`call` records no
        other graph)."""
        parts: dict[str, list[str]] = {"K": [], "S": []}
        items = []
        for source in sources:
            root = _ROOT.match(source)
            if root.group(1) == each:
                items.append("x" + source[root.end():])
            else:
                part = "K" if root.group(1) in kept else "S"
                items.append(f"{part}[{len(parts[part])}]")
                parts[part].append(source)
        return cls(*(eval(f"lambda L: ({''.join(f'{e}, ' for e in parts[p])})", {}) for p in ("K", "S")),
                   eval(f"lambda K, S, x: [{', '.join(items)}]", {}))


def _versions(xs: Any) -> list[int | None]:
    return [x._version if isinstance(x, torch.Tensor) else None for x in xs]


def _output_code(compiled: Callable[..., Any]) -> Any:
    """Inductor's compiled graph (``CompiledFxGraph``) inside aot_autograd's wrappers, found through their closures
    and ``__wrapped__`` links; None where this torch nests it otherwise (then the wrappers stay)."""
    try:
        from torch._inductor.output_code import CompiledFxGraph
    except ImportError:
        return None
    todo, seen = [compiled], set()
    while todo and len(seen) < 64:
        f = todo.pop()
        if id(f) in seen:
            continue
        seen.add(id(f))
        if isinstance(f, CompiledFxGraph):
            return f if callable(getattr(f, "current_callable", None)) else None
        for cell in getattr(f, "__closure__", None) or ():
            try:
                todo.append(cell.cell_contents)
            except ValueError:  # an empty cell
                pass
        todo += [v for v in (getattr(f, "__wrapped__", None), getattr(f, "compiled_fn", None)) if v is not None]
    return None


_compiled: dict[Callable[..., Any], Callable[..., Any]] = {}
_direct: dict[Hashable, _Graph] = {}
_served: list[tuple[_Graph, list[Any], Any]] = []  # (graph, its inputs, its outputs) of the calls through dynamo


_SCALAR_LOAD = "[static_cast<int64_t>(0L)]"


def restrict_scalars(source: str) -> str:
    """``source`` (inductor's C++ for one CPU kernel) with ``__restrict__`` on every pointer that the kernel reads or
    writes only at index 0: a one-element buffer — a hyperparameter, or a count that one loop writes and the next
    reads.

    Inductor loads such a value inside the loop over the elements, and the compiler may not move the load (and the
    arithmetic on it: ``1 − lr·λ``, a reciprocal, lerp's branch) out of the loop, because the vector stores may
    alias any object. Per vector of elements that was a dozen scalar instructions, two of them divisions, and made
    a compiled AdamW step 1.3× slower than torch's fused one on a CPU core (1.0× with this). ``__restrict__``
    promises what holds for the optimizer steps' graphs (``_writes_a_scalar`` refuses the others): no other pointer
    of the kernel reaches these buffers."""
    start = source.find(" kernel(")
    if start < 0:
        return source
    end = source.index(")", start)
    body = source[end:]

    def restricted(match: re.Match[str]) -> str:
        uses = re.findall(rf"\b{match.group(2)}\b(\[[^\]]*\])?", body)
        return f"{match.group(1)} __restrict__ {match.group(2)}" if uses and all(u == _SCALAR_LOAD for u in uses) \
            else match.group(0)

    signature = re.sub(r"((?:const )?[\w:]+\*) ((?:in|out)_ptr\d+)\b", restricted, source[start:end])
    return source[:start] + signature + body


@contextlib.contextmanager
def _scalars_restricted() -> Any:
    """While inductor compiles (or loads from its cache) an optimizer step's graph: :func:`restrict_scalars` on its
    C++ kernels. Another version of torch without the hook point: the kernels as inductor writes them."""
    try:
        from torch._inductor.async_compile import AsyncCompile
        original = AsyncCompile.cpp_pybinding
    except (ImportError, AttributeError):
        yield
        return

    def cpp_pybinding(self: Any, argtypes: list[str], source_code: str) -> Any:
        return original(self, argtypes, restrict_scalars(source_code))

    AsyncCompile.cpp_pybinding = cpp_pybinding
    try:
        yield
    finally:
        AsyncCompile.cpp_pybinding = original


_IN_PLACE_OPERATORS = {operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ifloordiv,
                       operator.imod, operator.ipow, operator.iand, operator.ior, operator.ixor, operator.setitem}


def _writes_a_scalar(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> bool:
    """Whether the graph may write one of its one-element inputs — an in-place op on it or on a one-element tensor
    computed from it (a view, or conservatively anything else) —, so that :func:`restrict_scalars` would be wrong."""
    scalars = {node for node, value in zip(gm.graph.find_nodes(op="placeholder"), example_inputs)
               if isinstance(value, torch.Tensor) and value.numel() == 1}
    for node in gm.graph.nodes:
        if node.op not in ("call_method", "call_function") or not scalars.intersection(node.all_input_nodes):
            continue
        name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
        first, out = node.args[0] if node.args else None, node.kwargs.get("out")
        mutable = isinstance(node.target, torch._ops.OpOverload) and node.target._schema.is_mutable  # torch.ops.*
        if (isinstance(first, torch.fx.Node) and first in scalars
                and (name.endswith("_") or node.target in _IN_PLACE_OPERATORS or mutable)
                or isinstance(out, torch.fx.Node) and out in scalars):
            return True
        value = node.meta.get("example_value")
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            scalars.add(node)
    return False


def _inductor(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable[..., Any]:
    """The inductor backend, wrapped so that each call records the graph that served it."""
    from torch._inductor.compile_fx import compile_fx

    cpu_probe.wait()
    with contextlib.nullcontext() if _writes_a_scalar(gm, example_inputs) else _scalars_restricted():
        compiled = compile_fx(gm, example_inputs)
    try:
        (outputs,) = gm.graph.find_nodes(op="output")[0].args
        graph = _Graph(compiled, [node.meta["grapharg"].source.name
                                  for node in gm.graph.find_nodes(op="placeholder")], len(outputs))
    except Exception:  # a graph of another shape than this module knows: always called through dynamo
        graph = None

    def run(*args: Any) -> Any:
        inputs = list(args)
        out = compiled(*args) if graph is None or graph.inner is not None else graph.observe(args)
        if graph is not None:
            _served.append((graph, inputs, out))
        return out

    return run


def _dynamo(fn: Callable[..., Any]) -> Callable[..., Any]:
    if fn not in _compiled:
        # the cap is per function: every φ, rule, Nesterov flag, ... is one more variant of the same code object
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
        _compiled[fn] = torch.compile(fn, backend=_inductor, fullgraph=True, dynamic=True)
    return _compiled[fn]


_parameters: dict[Callable[..., Any], tuple[str, ...]] = {}


def _locals(fn: Callable[..., Any], args: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(parameters(fn), args))


def graph(fn: Callable[..., Any], kind: Hashable) -> _Graph | None:
    """The graph recorded for ``fn``'s calls of ``kind``, called with its input list (``graph(inputs)``); None while
    ``kind`` has none yet (:func:`call` records it) or keeps going through dynamo."""
    return _direct.get((fn, kind))


def parameters(fn: Callable[..., Any]) -> tuple[str, ...]:
    """``fn``'s parameter names: the roots of its graphs' source expressions."""
    if fn not in _parameters:
        _parameters[fn] = tuple(inspect.signature(fn).parameters)
    return _parameters[fn]


def call(fn: Callable[..., Any], kind: Hashable, *args: Any) -> Any:
    """``torch.compile(fn)(*args)`` — directly through the graph recorded for ``kind`` once there is one. If the
    compiler fails (no C++ compiler, unsupported backend, ...): a warning, compilation off for the process
    (``implementation.set_compile_enabled``) and :data:`FAILED` returned — nothing was modified (compilation runs
    before the compiled code)."""
    recorded = _direct.get((fn, kind))
    if recorded is not None:
        return recorded(recorded.inputs(_locals(fn, args)))
    _served.clear()
    before = _contents(args)
    if any(isinstance(a, torch.Tensor) and a.device.type == "cpu" for a in args):
        cpu_probe.start()  # side by side with dynamo's tracing; inductor waits for it
    try:
        result = _dynamo(fn)(*args)
    except torch._dynamo.exc.TorchDynamoException as err:
        cpu_probe.wait()  # the probe outlives no call: another compile may not start while it runs
        from research_optim.optim.implementation import set_compile_enabled

        warnings.warn(f"research_optim: compiling {fn.__name__} failed ({type(err).__name__}: {err}); "
                      "using the eager optimizer steps from now on", RuntimeWarning, stacklevel=4)
        set_compile_enabled(False)
        return FAILED
    # a change to an argument's containers or attributes is a side effect dynamo replays outside the graph
    if len(_served) == 1 and _contents(args) == before and _checks_out(*_served[0], _locals(fn, args), result):
        _direct[(fn, kind)] = _served[0][0]
    _served.clear()
    return result


def _contents(x: Any) -> Any:
    """What a call could change in its arguments outside a graph: containers' keys and the values they hold, objects'
    attributes (as identities; tensors' data is the graph's business)."""
    if isinstance(x, dict):
        return tuple((key, id(v), _contents(v)) for key, v in x.items())
    if isinstance(x, (list, tuple)):
        return tuple((id(v), _contents(v)) for v in x)
    if isinstance(x, torch.Tensor) or not hasattr(x, "__dict__"):
        return None
    return tuple((key, id(v)) for key, v in vars(x).items())


def _checks_out(graph: _Graph, inputs: list[Any], out: Any, local: dict[str, Any], result: Any) -> bool:
    """Whether ``graph`` read from ``local`` gets exactly the ``inputs`` dynamo passed it and returns ``result``."""
    if not all(_ROOT.match(source) for source in graph.sources):  # an expression over more than the arguments
        return False
    try:
        read = graph.inputs(local)
    except Exception:  # an expression over more than the call's arguments
        return False
    same = len(read) == len(inputs) and all(a is b if isinstance(b, torch.Tensor) else type(a) is type(b) and a == b
                                            for a, b in zip(read, inputs))
    return same and (result is None if graph.n_outputs == 0 else graph.n_outputs == 1 and result is out[0])
