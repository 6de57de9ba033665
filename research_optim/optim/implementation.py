"""Which implementation of a step runs — one vocabulary for every optimizer of the library.

Every optimizer with a fast path takes ``implementation=`` with the same four meanings:

* ``"reference"`` — the readable per-tensor loop; the path tested against the public reference packages;
* ``"foreach"``   — the same arithmetic, op for op, as multi-tensor ``torch._foreach_*`` calls, one per op and
  (device, dtype) bucket: bit-identical to the reference on CPU (tested), far fewer kernel launches on a GPU;
* ``"compiled"``  — the reference step of *one* tensor ``torch.compile``d with dynamic sizes and called once per
  tensor on flat 1-D views (:func:`compiled_each`): inductor fuses each tensor's update into one pass over memory
  (Lion: read p, g, m; write p, m — 20 bytes per float32 parameter), which eager ops cannot do. Equal to the
  reference up to rounding (products written out where the reference passes ``alpha=``, lerp as one formula for
  every weight: :func:`lerp`; tested to 1e-6 relative in
  float32). Without compilation (switched off, or the compiler fails) it runs the eager path; so does every tensor
  a compiled step cannot take (:func:`compilable`: a tensor subclass such as FSDP's ``DTensor``, a non-contiguous
  tensor, one of fewer than 2 elements);
* ``"auto"`` (default) — compiled when compilation is on and the group holds at least ``COMPILE_MIN_NUMEL``
  elements (below that the first-step compile cost, seconds on CPU, is never repaid), else the eager path:
  foreach where the optimizer has it, else the reference.

Each optimizer has the paths its rules have — AdamW, Lion, SGD, Schedule-Free AdamW/SGD: all three; Muon and SaLSA:
reference and foreach (matrix products and trial forwards dominate, not memory traffic); Adafactor: reference
only (torch's arithmetic reads two norms on the host per tensor) — and refuses the others by name. The readable twin
of a *different algorithm* — the Schedule-Free Reference classes with explicit x, y, z — is a class of its own, not
an ``implementation``.

Process-wide switch: :func:`set_compile_enabled` or ``RESEARCH_OPTIM_COMPILE=0`` (a test conftest, a machine without
a C++ compiler); one optimizer's choice is its ``implementation`` (the training loop's ``train.compile_optimizer=false``
builds it with :func:`eager_path`). Compiled functions take hyperparameters as 0-dim float64 tensors
(:func:`scalar`), never Python floats: dynamo would specialise on a float and recompile whenever a schedule changes
lr. So that one per-tensor function serves both the eager paths (Python numbers) and the compiled ones (0-dim
tensors), :func:`add`, :func:`add_`, :func:`addcmul_`, :func:`div`, :func:`div_`, :func:`lerp` and :func:`lerp_` take
either. Compiled artefacts are cached across processes by inductor's FX graph cache (``TORCHINDUCTOR_CACHE_DIR``).

**One compile per rule variant, whatever the model.** The compiled function steps one tensor, traced with
dynamic sizes (``dynamic=True``): its inputs are flat views that are detached (no ``requires_grad``, no ``_base``
for dynamo to guard), so neither the number of tensors nor their shapes enter a guard, and a second model reuses
the graph. Dynamo compiles again only for what changes the code: another rule, φ, flag (Nesterov, inner momentum,
...) or dtype — with one bounded exception on a CPU: inductor's C++ code sums float32 with a cascade helper only
above 4,096 elements, so a variant with a floating-point reduction (the ``soft`` cautious φ's mean; the other
φ count the kept coordinates as integers) compiles a second graph when the first tensor on the other side of
4,096 elements comes: at most two graphs per variant.
Per-tensor reductions (the cautious mask's count) reduce the one tensor a call receives, unchanged by flattening.
Dynamo runs only for the first call of each kind (rule variant, dtypes, size regime); later calls run the graph it
compiled directly (``optim.compiled``, without aot_autograd's runtime wrappers where they only pass inputs through),
each parameter's flat views are kept between steps, and a step binds all its calls before it runs their kernels back
to back (Python right after a kernel over a large tensor runs cache-cold), reading the inputs that stay the same
from step to step once (:class:`_Prepared`): ~6–11 µs of host time per tensor on a CPU instead of ~170 µs through
dynamo, less than a small tensor's foreach step for most rules (foreach also runs cache-cold after the large
tensors' kernels), so a compiled group compiles its small tensors (biases, norms) too — under ``"auto"``, but those
under its rule's ``auto_compiled_min_numel`` (Schedule-Free SGD's: its foreach step is three ops).
"""
from __future__ import annotations

import os
from typing import Any, Callable, Hashable, Sequence

import torch
from torch import Tensor

from research_optim.optim import compiled

__all__ = [
    "IMPLEMENTATIONS", "COMPILE_MIN_NUMEL", "check_implementation", "eager_path", "resolve", "compile_enabled",
    "set_compile_enabled", "compilable", "compiled_each", "scalar", "graph_inputs",
    "add", "add_", "addcmul_", "div", "div_", "lerp", "lerp_", "bucket_indices", "per_bucket",
]

IMPLEMENTATIONS = ("auto", "reference", "foreach", "compiled")
COMPILE_MIN_NUMEL = 1 << 20  # ~1M elements: below this "auto" stays eager (compile cost not repaid)

REDUCTION_SPLIT = 4096  # inductor's CPU code sums floats with a cascade helper only above this many elements

_compile_override: bool | None = None


def check_implementation(owner: str, implementation: Any, available: Sequence[str]) -> None:
    """Refuse a value outside the vocabulary, or one this optimizer does not have (``"auto"`` is always allowed)."""
    allowed = ("auto", *available)
    if implementation not in allowed:
        why = f" ({owner} has no {implementation} path)" if implementation in IMPLEMENTATIONS else ""
        raise ValueError(f"{owner}: implementation must be one of {list(allowed)}, got {implementation!r}{why}")


def eager_path(available: Sequence[str]) -> str:
    """The path taken without compilation: foreach where the optimizer has it, else the reference."""
    return "foreach" if "foreach" in available else "reference"


def resolve(implementation: str, available: Sequence[str], numel: int, sharded: bool = False) -> str:
    """The path a group of ``numel`` elements takes: ``"reference"``, ``"foreach"`` or ``"compiled"``.

    ``sharded`` (FSDP ``DTensor`` parameters): the eager path — DTensor runs each op on the shards and makes its
    reductions whole-tensor ones (``optim.sharded``); the compiled steps are written for plain tensors."""
    eager = eager_path(available)
    if implementation == "reference":
        return "reference"
    compiled_ok = "compiled" in available and compile_enabled() and not sharded
    if implementation == "compiled":
        return "compiled" if compiled_ok else eager
    if implementation == "auto" and compiled_ok and numel >= COMPILE_MIN_NUMEL:
        return "compiled"
    return eager


def set_compile_enabled(enabled: bool | None) -> None:
    """Enable/disable compiled steps process-wide (None: back to the environment variable's choice)."""
    global _compile_override
    _compile_override = enabled


def compile_enabled() -> bool:
    """True unless switched off (:func:`set_compile_enabled` or ``RESEARCH_OPTIM_COMPILE=0``) or unavailable."""
    if _compile_override is not None:
        enabled = _compile_override
    else:
        enabled = os.environ.get("RESEARCH_OPTIM_COMPILE", "1").lower() not in ("0", "false", "no", "off")
    return enabled and hasattr(torch, "compile") and torch._dynamo.is_dynamo_supported()


def _leaves(tensors: Sequence[Any]) -> list[Tensor]:
    """The tensors of ``tensors`` (the parameter, its gradient, a dict of its state, ...), in order."""
    return [t for x in tensors for t in (x.values() if isinstance(x, dict) else (x,))]


def compilable(tensors: Sequence[Any]) -> bool:
    """Whether the compiled step takes one parameter with these tensors (the parameter first, then its gradient
    and state, dicts allowed): plain contiguous tensors, whose flat views it updates in place, of at least 2
    elements (dynamo specialises sizes 0 and 1). A tensor subclass (FSDP's ``DTensor``) is not: its reductions
    need the eager ops' collectives."""
    leaves = _leaves(tensors)
    return leaves[0].numel() >= 2 and all(type(t) in _PLAIN and t.is_contiguous() for t in leaves)


_PLAIN = (Tensor, torch.nn.Parameter)


def _flat(x: Any) -> Any:
    """A flat view (of every tensor of a dict) that dynamo's guards see as a plain tensor of a symbolic size: no
    ``requires_grad`` and no ``_base`` (dynamo would guard a view's base, whose shape differs from model to
    model)."""
    return {key: _flat(v) for key, v in x.items()} if isinstance(x, dict) else x.view(-1).detach()


def _kind(x: Any) -> Hashable:
    """What dynamo's guards can see of an argument: a tensor's dtype and device, a dict's keys, a number's or
    name's value, an object's type and attributes (a rule's ``order``, ``nesterov``, ...)."""
    if isinstance(x, Tensor):
        return x.dtype, x.device
    if isinstance(x, dict):
        return tuple((key, _kind(v)) for key, v in x.items())
    if isinstance(x, (tuple, list)):
        return type(x), tuple(_kind(v) for v in x)
    if x is None or isinstance(x, (bool, int, float, str)):
        return type(x), x
    return type(x), _kind(vars(x))


class _Prepared:
    """A parameter's flat views for :func:`compiled_each` except its gradient's (a new tensor at most steps), what
    dynamo's guards see of them (``kind``, interned), and per graph the inputs read from them (:meth:`inputs`);
    reused while the call passes the same tensors at the same addresses (after a ``load_state_dict`` or
    ``p.data = ...`` they are made anew)."""

    __slots__ = ("param", "held", "same", "tensors", "ptrs", "flat", "grad_at", "kind", "kept", "grad_name",
                 "shared_names", "graphs", "recorded")

    def __init__(self, param: Tensor, tensors: Sequence[Any], grad: Tensor, names: tuple[str, ...]) -> None:
        self.param = param
        self.grad_at = next(i for i, x in enumerate(tensors) if x is grad)
        # what the flat views depend on: the tensors (and dict keys) but the gradient, and the tensors' addresses
        self.held = _held(tensors, self.grad_at)
        self.same = _sameness(tensors, self.grad_at)
        self.tensors = [x for x in self.held if isinstance(x, Tensor)]
        self.ptrs = [t.data_ptr() for t in self.tensors]
        self.flat = [None if i == self.grad_at else _flat(x) for i, x in enumerate(tensors)]
        self.kind = _interned((_kind(self.flat), param.numel() > REDUCTION_SPLIT))
        # the compiled function's parameter names: of the flat views, of the gradient, of the shared arguments
        self.kept = {names[i]: x for i, x in enumerate(self.flat) if i != self.grad_at}
        self.grad_name, self.shared_names = names[self.grad_at], names[len(tensors):]
        self.graphs: dict[Any, tuple[compiled.Readers, tuple[Any, ...]]] = {}
        # the recorded graph by the kind of the shared arguments and the gradient's dtype (torch keeps a gradient
        # on its parameter's device; ``p.grad.data = ...`` can change its dtype)
        self.recorded: dict[tuple[int, torch.dtype], Any] = {}

    def serves(self, tensors: Sequence[Any], grad: Tensor) -> bool:
        """Whether the call passes the same tensors (and keys) at the same addresses, contiguous (after ``p.data =
        ...`` a tensor keeps its identity, not its memory)."""
        return self.same(tensors, grad, self.held) and list(map(Tensor.data_ptr, self.tensors)) == self.ptrs \
            and all(map(Tensor.is_contiguous, self.tensors))

    def inputs(self, graph: Any, step: _Shared, grad: Tensor) -> list[Any]:
        """``graph``'s input list for this parameter, the gradient ``grad`` and the shared arguments ``step``: the
        parts read from the parameter and its state are read once, those from ``step`` once per step."""
        read = self.graphs.get(graph)
        if read is None:
            readers = graph.readers(tuple(self.kept), self.grad_name)
            read = self.graphs[graph] = readers, readers.kept(self.kept)
        readers, kept = read
        shared = step.read.get(graph)
        if shared is None:
            shared = step.read[graph] = readers.shared(dict(zip(self.shared_names, step.args)))
        flat = grad if grad.dim() == 1 else grad.view(-1)  # a view costs ~1 µs
        return readers.merge(kept, shared, flat.detach() if grad.requires_grad else flat)


class _Shared:
    """The arguments shared by the calls of a step (``args_of``'s tuple), their interned kind and what each graph
    reads from them."""

    __slots__ = ("args", "kind", "read")

    def __init__(self, args: tuple[Any, ...]) -> None:
        self.args, self.kind, self.read = args, _interned(_kind(args)), {}


_kinds: dict[Hashable, int] = {}


def _interned(kind: Hashable) -> int:
    """A small number for ``kind`` (deep tuples hash slowly, and a compiled call's key is hashed at every call)."""
    return _kinds.setdefault(kind, len(_kinds))


def _held(tensors: Sequence[Any], skip: int) -> list[Any]:
    """The arguments but the ``skip``-th, a dict as its keys then its values."""
    out: list[Any] = []
    for i, x in enumerate(tensors):
        if i != skip:
            if isinstance(x, dict):
                out += x
                out += x.values()
            else:
                out.append(x)
    return out


_samenesses: dict[Hashable, Callable[[Sequence[Any], Tensor, list[Any]], bool]] = {}


def _sameness(tensors: Sequence[Any], grad_at: int) -> Callable[[Sequence[Any], Tensor, list[Any]], bool]:
    """``same(tensors, grad, held)``: whether ``tensors`` holds ``grad`` at ``grad_at`` and otherwise exactly the
    objects ``held`` (:func:`_held`'s list of the arguments like ``tensors``, a dict's keys in the same order) —
    written out for their layout (a tuple of a parameter, a gradient and a state dict of two buffers: one line of
    identity tests), a generic comparison of lists cost ~5 µs per parameter."""
    layout = tuple(tuple(x) if isinstance(x, dict) else None for x in tensors)
    if (layout, grad_at) not in _samenesses:
        tests, at, keys = [f"len(t) == {len(layout)}", f"t[{grad_at}] is g"], 0, []
        for i, x in enumerate(layout):
            if i == grad_at:
                continue
            if x is None:
                tests.append(f"t[{i}] is H[{at}]")
                at += 1
                continue
            tests.append(f"type(t[{i}]) is dict and tuple(t[{i}]) == K[{len(keys)}]")
            keys.append(x)
            tests += [f"t[{i}][H[{at + j}]] is H[{at + len(x) + j}]" for j in range(len(x))]
            at += 2 * len(x)
        _samenesses[layout, grad_at] = eval(f"lambda t, g, H: {' and '.join(tests)}", {"K": tuple(keys)})
    return _samenesses[layout, grad_at]


def _prepared_of(owner: Any) -> dict[int, _Prepared]:
    """``owner``'s (an optimizer's) cache of :class:`_Prepared` by parameter identity: it lives and dies with the
    optimizer, which holds the parameters anyway (and is not pickled: ``Optimizer.__getstate__`` names what is).
    ``load_state_dict`` empties it, so that the views of the old state do not keep its memory until the next step."""
    if "_compiled_views" not in vars(owner):
        owner._compiled_views = {}
        owner.register_load_state_dict_post_hook(lambda optimizer: optimizer._compiled_views.clear())
    return owner._compiled_views


def compiled_each(fn: Callable[..., Any], owner: Any, params: Sequence[Tensor],
                  tensors_of: Callable[[Tensor], Sequence[Any]],
                  args_of: Callable[[Tensor], tuple[Any, ...]],
                  eager_step: Callable[[list[Tensor]], None],
                  min_numel: int = 0) -> tuple[list[Tensor], Tensor | None]:
    """Step every :func:`compilable` parameter of at least ``min_numel`` elements of the optimizer ``owner`` (under
    ``"auto"``: its rule's ``auto_compiled_min_numel``) with the compiled
    ``fn(*flat views of tensors_of(p), *args_of(p))``, one call per tensor (``compiled.call``: dynamo once per kind
    of call, the graph directly after); ``fn`` returns the tensor's masked count (a 0-dim tensor) or None.
    ``tensors_of(p)`` holds ``p.grad`` once; ``args_of`` returns the same tuple for the parameters that share their
    arguments. The flat views of everything else are made once and kept while the same tensors come at the same
    addresses (:class:`_Prepared`). ``eager_step(rest)`` steps the parameters left to the eager path — those not
    compilable or under ``min_numel``, and every one not yet stepped if the compiler failed — before the compiled
    calls run: host code runs slower right after a kernel that streamed a large tensor (its objects left the
    caches; ``python -m benchmarks.small_tensors``: the foreach step of a model's small tensors is 0.3–2% faster
    before the compiled calls than after them).

    Returns (the stepped parameters, their masked count summed on the device, or None)."""
    eager: list[Tensor] = []
    stepped: list[Tensor] = []
    counts: list[Tensor] = []
    shared: dict[int, _Shared] = {}  # by the identity of args_of's tuple
    # every call is bound to its graph first, then they run back to back: binding is Python over many small
    # objects, which runs ~3× slower right after a kernel has streamed a large tensor through the caches (measured:
    # 27 against 8 µs per tensor of 590k elements)
    bound: list[Tensor] = []
    ready: list[tuple[Any, list[Any]]] = []  # (graph, its inputs) of each parameter in ``bound``
    cache = _prepared_of(owner)
    names = compiled.parameters(fn)
    for i, p in enumerate(params):
        tensors, grad = tensors_of(p), p.grad
        prepared = cache.get(id(p))  # by identity: a tensor's own hash is a Python call
        if prepared is None or prepared.param is not p or not prepared.serves(tensors, grad):
            prepared = None
            if p.numel() >= min_numel and compilable(tensors):
                prepared = cache[id(p)] = _Prepared(p, tensors, grad, names)
        if prepared is None or type(grad) not in _PLAIN or not grad.is_contiguous():
            eager.append(p)
            continue
        args = args_of(p)
        step = shared.get(id(args))
        if step is None or step.args is not args:
            step = shared[id(args)] = _Shared(args)
        graph = prepared.recorded.get((step.kind, grad.dtype))
        if graph is None:
            kind = (step.kind, prepared.kind, grad.dtype, grad.device)
            graph = compiled.graph(fn, kind)
            if graph is not None:
                prepared.recorded[step.kind, grad.dtype] = graph
        if graph is not None:
            bound.append(p)
            ready.append((graph, prepared.inputs(graph, step, grad)))
            continue
        flat = list(prepared.flat)
        flat[prepared.grad_at] = _flat(grad)
        count = compiled.call(fn, kind, *flat, *args)  # the first call of its kind: through dynamo, now
        if count is compiled.FAILED:  # nothing of this tensor changed
            eager += params[i:]
            break
        stepped.append(p)
        if count is not None:
            counts.append(count)
    if eager:
        eager_step(eager)
    for p, count in zip(bound, compiled.run_all(ready)):
        stepped.append(p)
        if count is not None:
            counts.append(count)
    return stepped, torch.stack(counts).sum() if counts else None


def scalar(value: float) -> Tensor:
    """A hyperparameter as a 0-dim float64 CPU tensor: a graph input, so a new value never recompiles."""
    return torch.tensor(float(value), dtype=torch.float64)


def graph_inputs(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with every number as a 0-dim tensor (:func:`scalar`); booleans and names stay static."""
    return {key: scalar(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
            for key, v in values.items()}


def add(x: Tensor, y: Tensor, alpha: Any) -> Tensor:
    """x + α·y as a new tensor (``torch.add(alpha=)`` for a number α, the product written out for a 0-dim tensor)."""
    return x + y * alpha if isinstance(alpha, Tensor) else x.add(y, alpha=alpha)


def add_(x: Tensor, y: Tensor, alpha: Any) -> Tensor:
    """x ← x + α·y in place: one fused op for a number α, the product written out for a 0-dim tensor α (compiled
    code: ``alpha=`` needs a number)."""
    return x.add_(y * alpha) if isinstance(alpha, Tensor) else x.add_(y, alpha=alpha)


def lerp(start: Tensor, end: Tensor, weight: Any) -> Tensor:
    """start + w·(end − start) as a new tensor: ``torch.lerp`` for a number w; for a 0-dim tensor w (compiled code)
    that formula written out. torch's lerp switches to end − (1 − w)·(end − start) for w ≥ 0.5, and with w an
    input of the graph inductor computes both per element and blends them (a few percent of a compiled Lion step on
    a CPU core: benchmarks/README.md); the written-out formula equals it up to rounding, and is torch's own for
    w < 0.5."""
    return start + weight * (end - start) if isinstance(weight, Tensor) else torch.lerp(start, end, weight)


def lerp_(start: Tensor, end: Tensor, weight: Any) -> Tensor:
    """start ← lerp(start, end, w) in place (:func:`lerp`'s arithmetic)."""
    return start.add_(weight * (end - start)) if isinstance(weight, Tensor) else start.lerp_(end, weight)


def addcmul_(x: Tensor, y: Tensor, z: Tensor, value: Any) -> Tensor:
    """x ← x + value·y·z in place (``addcmul_`` for a number, written out for a 0-dim tensor)."""
    return x.add_(y * z * value) if isinstance(value, Tensor) else x.addcmul_(y, z, value=value)


def div(x: Tensor, d: Any) -> Tensor:
    """x / d as a new tensor; for a 0-dim tensor d (compiled code) x·(1/d): the reciprocal is taken once, outside
    the kernel's loop, and a vector division costs several multiplications on a CPU (it rounds once more)."""
    return x * d.reciprocal() if isinstance(d, Tensor) else x / d


def div_(x: Tensor, d: Any) -> Tensor:
    """x ← x / d in place (:func:`div`'s arithmetic)."""
    return x.mul_(d.reciprocal()) if isinstance(d, Tensor) else x.div_(d)


def bucket_indices(tensors: Sequence[Tensor], keys: Sequence[Hashable] | None = None) -> list[list[int]]:
    """Indices of ``tensors`` grouped by (device, dtype[, key]), in order — the one grouping helper: a multi-tensor
    kernel's fast route and a compiled call both need one device and one dtype (``keys`` adds e.g. a step count)."""
    out: dict[Hashable, list[int]] = {}
    for i, t in enumerate(tensors):
        out.setdefault((t.device, t.dtype, None if keys is None else keys[i]), []).append(i)
    return list(out.values())


def per_bucket(fn: Callable[..., Any], tensors: Sequence[Tensor], *others: Sequence[Any]) -> list[Any]:
    """Call ``fn(tensors_b, *others_b)`` once per (device, dtype) bucket (``others``: parallel lists split the same
    way) and return its per-tensor results in the original order (Nones where ``fn`` returns None)."""
    out: list[Any] = [None] * len(tensors)
    for idx in bucket_indices(tensors):
        result = fn([tensors[i] for i in idx], *[[other[i] for i in idx] for other in others])
        if result is not None:
            for i, r in zip(idx, result):
                out[i] = r
    return out
