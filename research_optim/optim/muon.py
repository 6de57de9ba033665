"""Muon — momentum orthogonalised by Newton–Schulz (Jordan et al. 2024); ``torch.optim.Muon`` is the reference.

For the hidden-layer matrices (2-D parameters, param groups with ``use_muon=True``), per matrix::

    B ← lerp(B, g, 1 − μ)                      momentum buffer, μ = 0.95
    U ← lerp(g, B, μ) if nesterov else B
    O ← NS_k(U)                                k = 5 quintic Newton–Schulz iterations in bfloat16 (below)
    p ← p·(1 − lr·λ) − lr·r(shape)·O           decay with the unadjusted lr; r from ``adjust_lr_fn``

Every other parameter — embeddings, the output head, norms, biases (groups with ``use_muon=False``) — follows the
AdamW rule (``adamw.ADAM``) with its own ``adamw_lr``, ``adamw_betas``, ``adamw_eps``, ``adamw_weight_decay``: one
optimizer, two kinds of param groups, as in the Muon README. A group without ``use_muon`` is split by shape (2-D
→ Muon), as torch's docs split parameters; :func:`hidden_matrices` picks the hidden layers of a model (the
training loop's ``hidden_matrices: true`` config key uses it), since embeddings and the head are 2-D too.

Bit for bit ``torch.optim.Muon`` by default (tested, float32 and float64 parameters). One deliberate difference:
torch's ``grad.bfloat16()`` is the tensor itself for bfloat16 parameters, so with ``nesterov=False`` its
normalisation divides the momentum buffer in place; here the iteration always works on a copy. ``ns_dtype="float32"``
runs the iteration in float32 (an option beside torch's arithmetic, not its default).

Composition, through the shared layer: the orthogonalised O is a direction like any other — ``cautious=<φ>``
masks it (and the AdamW group's direction) with φ(O∘g); the Schedule-Free wrapper takes a Muon as its base
(config ``sf_muon``); SaLSA searches along it (``direction="muon"``, config ``salsa_muon``). Sharding (FSDP): the
iteration needs whole matrices, so :func:`orthogonalize` gathers a sharded (``DTensor``) matrix, iterates on the
whole of it (every rank the same) and keeps this rank's shard of O.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from research_optim.optim import checks
from research_optim.optim.adamw import ADAM
from research_optim.optim.direction import DirectionOptimizer
from research_optim.optim.moments import ema_, ema_many_
from research_optim.optim.rule import Rule
from research_optim.optim.sharded import is_sharded, shard_like, whole

__all__ = ["NS_COEFFICIENTS", "ADJUST_LR", "NS_DTYPES", "orthogonalize", "MuonRule", "MUON", "Muon",
           "CautiousMuon", "hidden_matrices"]

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # (a, b, c) of Keller Jordan's quintic iteration, as torch's

# r(shape) for a (rows, cols) matrix — torch's adjust_lr_fn choices
ADJUST_LR = {
    "original": lambda rows, cols: math.sqrt(max(1, rows / cols)),        # Keller Jordan
    "match_rms_adamw": lambda rows, cols: 0.2 * math.sqrt(max(rows, cols)),  # Moonshot: AdamW's lr and decay carry over
    "spectral_unclamped": lambda rows, cols: math.sqrt(rows / cols),        # Bernstein
}
NS_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def orthogonalize(u: Tensor, ns_coefficients: Sequence[float] = NS_COEFFICIENTS, ns_steps: int = 5,
                  eps: float = 1e-7, ns_dtype: torch.dtype = torch.bfloat16) -> Tensor:
    """NS_k(U) ≈ the orthogonal factor of U (singular values driven to ~[0.7, 1.2]), a new tensor in ``ns_dtype``.

    On Uᵀ when rows > cols, after X = U / max(‖U‖_F, eps); then k times: A = X·Xᵀ, B = b·A + c·A·A, X = a·X + B·X.
    A sharded U is gathered, and O comes back sharded as U.
    """
    if is_sharded(u):
        return shard_like(orthogonalize(whole(u), ns_coefficients, ns_steps, eps, ns_dtype), u)
    a, b, c = ns_coefficients
    x = u.to(ns_dtype, copy=True)
    tall = u.size(0) > u.size(1)
    if tall:
        x = x.T
    x.div_(x.norm().clamp(min=eps))
    for _ in range(ns_steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


class MuonRule(Rule):
    """The matrix rule: Nesterov (or plain) EMA momentum, orthogonalised; η = lr·r(shape). The direction is O in
    the parameter's dtype (an exact conversion: torch adds the bfloat16 O to p in p's precision all the same)."""

    buffers = ("momentum_buffer",)

    def check(self, owner: str, group: dict[str, Any]) -> None:
        checks.unit_interval(owner, "momentum", group["momentum"])
        checks.boolean(owner, "nesterov", group["nesterov"])
        coefficients = group["ns_coefficients"]
        checks.sequence(owner, "ns_coefficients", coefficients, 3, "(a, b, c)")
        for name, value in zip(("a", "b", "c"), coefficients):
            checks.finite(owner, f"ns_coefficients.{name}", value)
        checks.integer(owner, "ns_steps", group["ns_steps"], minimum=1)
        checks.non_negative(owner, "eps", group["eps"])
        checks.choice(owner, "adjust_lr_fn", group["adjust_lr_fn"], list(ADJUST_LR))
        checks.choice(owner, "ns_dtype", group["ns_dtype"], list(NS_DTYPES))
        for p in group["params"]:
            if p.ndim != 2:
                raise ValueError(f"{owner}: a use_muon=True group holds a parameter of shape {tuple(p.shape)}; Muon "
                                 "orthogonalises 2-D matrices only — give it use_muon=False (the AdamW group)")

    def init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def scalars(self, group: dict[str, Any], step: int) -> dict[str, Any]:
        return dict(momentum=group["momentum"], nesterov=group["nesterov"], ns_coefficients=group["ns_coefficients"],
                    ns_steps=group["ns_steps"], eps=group["eps"], ns_dtype=NS_DTYPES[group["ns_dtype"]])

    def direction(self, p: Tensor, g: Tensor, state: dict[str, Any], s: dict[str, Any]) -> Tensor:
        buf = ema_(state["momentum_buffer"], g, s["momentum"])
        u = g.lerp(buf, s["momentum"]) if s["nesterov"] else buf
        return self._orthogonalized(u, p, s)

    def directions(self, ps: list[Tensor], gs: list[Tensor], states: list[dict[str, Any]],
                   s: dict[str, Any]) -> list[Tensor]:
        bufs = [st["momentum_buffer"] for st in states]
        ema_many_(bufs, gs, s["momentum"])
        us = torch._foreach_lerp(gs, bufs, s["momentum"]) if s["nesterov"] else bufs
        return [self._orthogonalized(u, p, s) for u, p in zip(us, ps)]  # matrix products: no foreach form

    @staticmethod
    def _orthogonalized(u: Tensor, p: Tensor, s: dict[str, Any]) -> Tensor:
        return orthogonalize(u, s["ns_coefficients"], s["ns_steps"], s["eps"], s["ns_dtype"]).to(p.dtype)

    def step_size(self, p: Tensor, u: Tensor, state: dict[str, Any], group: dict[str, Any]) -> float:
        return group["lr"] * ADJUST_LR[group["adjust_lr_fn"]](*p.shape)  # torch's lr * adjusted_ratio


MUON = MuonRule()


class Muon(DirectionOptimizer):
    """Muon for the matrices, AdamW for the rest, in one optimizer (see the module docstring).

    Args:
        params: parameters or param-group dicts; a group's ``use_muon`` (bool) says which rule steps it, and a group
            without it is split by shape (2-D parameters → Muon, the others → AdamW).
        lr, weight_decay, momentum, nesterov, ns_coefficients, eps, ns_steps, adjust_lr_fn: torch.optim.Muon's, with
            its defaults (``adjust_lr_fn``: ``"original"`` | ``"match_rms_adamw"`` | ``"spectral_unclamped"``).
        ns_dtype: ``"bfloat16"`` (torch's arithmetic) or ``"float32"`` for the Newton–Schulz iteration.
        adamw_lr, adamw_betas, adamw_eps, adamw_weight_decay: the AdamW group's defaults (torch.optim.AdamW's).
        cautious, cautious_factor: φ masking of every direction (see ``research_optim.optim.cautious``).
        implementation: ``"auto"`` | ``"reference"`` | ``"foreach"`` (the iteration is a chain of matrix products,
            so there is no compiled Muon step; the AdamW group follows the same choice).
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: Sequence[float] = NS_COEFFICIENTS,
        eps: float = 1e-7,
        ns_steps: int = 5,
        adjust_lr_fn: str = "original",
        ns_dtype: str = "bfloat16",
        adamw_lr: float = 1e-3,
        adamw_betas: Sequence[float] = (0.9, 0.999),
        adamw_eps: float = 1e-8,
        adamw_weight_decay: float = 0.01,
        cautious: str | None = None,
        cautious_factor: float = 0.0,
        implementation: str = "auto",
    ) -> None:
        self._kind_defaults = {
            True: dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                       ns_coefficients=ns_coefficients, eps=eps, ns_steps=ns_steps, adjust_lr_fn=adjust_lr_fn,
                       ns_dtype=ns_dtype),
            False: dict(lr=adamw_lr, weight_decay=adamw_weight_decay, betas=adamw_betas, eps=adamw_eps),
        }
        common = dict(cautious=cautious, cautious_factor=cautious_factor)
        for use_muon, kind in self._kind_defaults.items():  # both kinds, even if the parameters use one
            self._check_group({"params": [], "use_muon": use_muon, **common, **kind})
        super().__init__(params, common, implementation)

    def rule_of(self, group: dict[str, Any]) -> Rule:
        return MUON if group["use_muon"] else ADAM

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """A group with ``use_muon`` gets that kind's defaults; one without is split by shape into both kinds."""
        if "use_muon" in param_group:
            checks.boolean(type(self).__name__, "use_muon", param_group["use_muon"])
            super().add_param_group({**self._kind_defaults[param_group["use_muon"]], **param_group})
            return
        params = param_group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for use_muon in (True, False):
            part = [p for p in params if (p.ndim == 2) == use_muon]
            if part:
                self.add_param_group({**param_group, "params": part, "use_muon": use_muon})


class CautiousMuon(Muon):
    """C-Muon: ``Muon`` with ``cautious="indicator_mean"`` on both kinds of group (φ(O∘g) for the matrices, C-AdamW
    for the rest). Arguments and defaults: see ``Muon``."""

    def __init__(self, params: Any, cautious: str | None = "indicator_mean", **kwargs: Any) -> None:
        super().__init__(params, cautious=cautious, **kwargs)


def hidden_matrices(model: nn.Module) -> set[nn.Parameter]:
    """The 2-D weights of the hidden layers of ``model``, the parameters Muon is meant for: every ``nn.Linear``
    weight except the output head — the last ``nn.Linear`` in module order — and any weight shared with an
    ``nn.Embedding`` (a tied head). Embeddings, convolutions, norms and biases are not matrices here."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    return {m.weight for m in linears[:-1] if id(m.weight) not in embeddings and m.weight.requires_grad}
