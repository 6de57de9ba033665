"""A search space as config: named dimensions, each a config key and the range (or choices) it is sampled from.

``conf/search_space/<optimizer>.yaml`` (the optimizer's own file; ``search_space=<name>`` picks another)::

    lr:                        # the dimension's name: Optuna's parameter name, and search_space.lr.* on the
      key: optimizer.lr        # command line; key: the config key the sampled value sets
      low: 1.0e-4
      high: 1.0e-2
      log: true                # log-uniform (default: uniform)
    one_minus_beta1:
      key: optimizer.betas.0   # a list element by its index
      one_minus: true          # the key is set to 1 − the sampled value (1 − β sampled on a log scale)
      low: 0.02
      high: 0.5
      log: true
    phi:
      key: optimizer.phi
      choices: [indicator_mean, soft]

A trial's sampled values become config overrides, so a trial is an ordinary run whose identity (the config hash)
tells trials apart; keys outside the run identity (``seed``, ``run.*``, ``cluster.*``, ...) cannot be searched.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from omegaconf import DictConfig, ListConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution

from research_optim.run_dir import NOT_IN_IDENTITY

FIELDS = {"key", "low", "high", "log", "one_minus", "choices"}
_ABSENT = object()


@dataclass(frozen=True)
class Dimension:
    name: str
    key: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    one_minus: bool = False
    choices: tuple[Any, ...] | None = None

    @property
    def distribution(self) -> BaseDistribution:
        if self.choices is not None:
            return CategoricalDistribution(self.choices)
        return FloatDistribution(self.low, self.high, log=self.log)

    def config_value(self, sampled: Any) -> Any:
        """What the config key is set to: the sampled value, or 1 − it (``one_minus``)."""
        return 1.0 - sampled if self.one_minus else sampled

    def position(self, sampled: float) -> float:
        """Where ``sampled`` lies in [low, high] on the sampling scale: 0 at low, 1 at high."""
        scale = math.log if self.log else float
        return (scale(sampled) - scale(self.low)) / (scale(self.high) - scale(self.low))

    def holds(self, sampled: Any) -> bool:
        return sampled in self.choices if self.choices is not None else self.low <= sampled <= self.high

    def same_kind(self, earlier: BaseDistribution) -> bool:
        """Whether a study that sampled ``earlier`` can go on sampling this dimension (Optuna refuses to mix kinds,
        log flags or choices under one name)."""
        now = self.distribution
        if isinstance(now, CategoricalDistribution) or isinstance(earlier, CategoricalDistribution):
            return now == earlier
        return type(now) is type(earlier) and now.log == earlier.log

    def edge(self, sampled: Any, fraction: float) -> str | None:
        """"lower" / "upper" when ``sampled`` lies in the outer ``fraction`` of the range (on the sampling scale)
        or beyond it; else None."""
        if self.choices is not None:
            return None
        where = self.position(sampled)
        return "lower" if where < fraction else "upper" if where > 1 - fraction else None

    def widened(self, side: str) -> float:
        """A bound one step past ``side``: a decade on a log scale, half the range on a linear one (1 − β ≤ 1)."""
        if self.log:
            bound = self.high * 10 if side == "upper" else self.low / 10
        else:
            width = (self.high - self.low) / 2
            bound = self.high + width if side == "upper" else self.low - width
        return min(bound, 1.0) if self.one_minus and side == "upper" else bound

    def describe(self) -> str:
        return describe(self.distribution)


@dataclass(frozen=True)
class SearchSpace:
    dimensions: tuple[Dimension, ...]

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | None, cfg: DictConfig, problems: list[str]) -> "SearchSpace":
        """Read ``search_space`` and check it against the composed run config ``cfg``, adding what is wrong to
        ``problems``."""
        node = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else (node or {})
        if not node:
            problems.append("search_space is empty: name at least one dimension (conf/search_space/ has one file "
                            "per optimizer; search_space=<file> picks another)")
        dims = [dim for name, spec in node.items() if (dim := _dimension(name, spec, cfg, problems)) is not None]
        keys = [dim.key for dim in dims]
        problems += [f"search_space: key {key} is set by two dimensions" for key in sorted(set(keys))
                     if keys.count(key) > 1]
        return cls(tuple(dims))

    @property
    def distributions(self) -> dict[str, BaseDistribution]:
        return {dim.name: dim.distribution for dim in self.dimensions}

    def overrides(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Config key → value for sampled ``params`` (parameter name → sampled value)."""
        return {dim.key: dim.config_value(params[dim.name]) for dim in self.dimensions}

    def apply(self, cfg: DictConfig, params: Mapping[str, Any]) -> DictConfig:
        """A copy of ``cfg`` with the sampled values set."""
        return _updated(cfg, self.overrides(params))

    def masked(self, cfg: DictConfig) -> DictConfig:
        """A copy of ``cfg`` with every searched key set to None: what all trials of a study share."""
        return _updated(cfg, {dim.key: None for dim in self.dimensions})

    def corners(self) -> list[dict[str, Any]]:
        """Parameter sets that reach every bound and every choice: the values a config check must accept."""
        width = max([2] + [len(dim.choices) for dim in self.dimensions if dim.choices is not None])
        return [{dim.name: (dim.choices[i % len(dim.choices)] if dim.choices is not None
                            else (dim.low, dim.high)[i % 2]) for dim in self.dimensions} for i in range(width)]

    def settings_keys(self, cfg: DictConfig) -> list[str]:
        """The config keys as a run's flattened config names them (a list element → the whole list)."""
        return sorted({_settings_key(cfg, dim.key) for dim in self.dimensions})

    def describe(self, params: Mapping[str, Any]) -> str:
        return " ".join(f"{name}={_short(value)}" for name, value in params.items())


def describe(dist: BaseDistribution) -> str:
    """``[0.0001, 0.01] log``, ``[0.1, 0.9]`` or ``{a, b}``."""
    if isinstance(dist, CategoricalDistribution):
        return "{" + ", ".join(map(str, dist.choices)) + "}"
    return f"[{dist.low:g}, {dist.high:g}]{' log' if dist.log else ''}"


def _updated(cfg: DictConfig, values: Mapping[str, Any]) -> DictConfig:
    cfg = cfg.copy()
    for key, value in values.items():
        OmegaConf.update(cfg, key, value, merge=False)
    return cfg


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _settings_key(cfg: DictConfig, key: str) -> str:
    """``optimizer.betas.0`` → ``optimizer.betas``: reports compare lists as one value."""
    parts, node = key.split("."), cfg
    for i, part in enumerate(parts):
        if isinstance(node, ListConfig):
            return ".".join(parts[:i])
        node = node[part]
    return key


def _dimension(name: str, spec: Any, cfg: DictConfig, problems: list[str]) -> Dimension | None:
    where = f"search_space.{name}"
    if not isinstance(spec, dict):
        problems.append(f"{where}: expected a mapping with key and low/high or choices, got {spec!r}")
        return None
    unknown = sorted(set(spec) - FIELDS)
    if unknown:
        problems.append(f"{where}: unknown fields {unknown} (known: {', '.join(sorted(FIELDS))})")
        return None
    key = spec.get("key")
    if not isinstance(key, str):
        problems.append(f"{where}.key: the config key the value sets is missing (e.g. key: optimizer.lr)")
        return None
    if not _key_is_searchable(where, key, cfg, problems):
        return None
    choices, low, high = spec.get("choices"), spec.get("low"), spec.get("high")
    log, one_minus = bool(spec.get("log", False)), bool(spec.get("one_minus", False))
    if choices is not None:
        if low is not None or high is not None or log or one_minus:
            problems.append(f"{where}: choices cannot be combined with low/high/log/one_minus")
        elif not (isinstance(choices, list) and choices):
            problems.append(f"{where}.choices: must be a non-empty list")
        else:
            return Dimension(name, key, choices=tuple(choices))
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high)):
        problems.append(f"{where}: needs finite numbers low and high (or choices), got low={low}, high={high}")
    elif not low < high:
        problems.append(f"{where}: low={low} must be below high={high}")
    elif log and low <= 0:
        problems.append(f"{where}: a log scale needs low > 0, got low={low}")
    elif one_minus and not (0 <= low and high <= 1):
        problems.append(f"{where}: one_minus samples 1 − value in [0, 1], got [{low}, {high}]")
    else:
        return Dimension(name, key, float(low), float(high), log, one_minus)
    return None


def _key_is_searchable(where: str, key: str, cfg: DictConfig, problems: list[str]) -> bool:
    """Whether ``key`` names a plain value of the run config that belongs to its identity (else a problem)."""
    if key == "seed":
        problems.append(f"{where}.key=seed: the seeds are the protocol's (tune.seeds to select, tune.confirm_seeds "
                        "to confirm)")
        return False
    outside = next((skip for skip in NOT_IN_IDENTITY if key == skip or key.startswith(skip + ".")), None)
    if outside is not None:
        problems.append(f"{where}.key={key}: {outside} is not part of a run's identity, so trials could not be told "
                        "apart; search keys that change what is computed (optimizer.*, schedule.*, train.*)")
        return False
    value = OmegaConf.select(cfg, key, default=_ABSENT)
    if value is _ABSENT:
        parent = key.rpartition(".")[0]
        known = OmegaConf.select(cfg, parent, default=None) if parent else cfg
        hint = f" ({parent} has: {', '.join(map(str, known.keys()))})" if isinstance(known, DictConfig) else ""
        problems.append(f"{where}.key={key}: no such key in the composed config{hint}")
        return False
    if isinstance(value, (DictConfig, ListConfig)):
        problems.append(f"{where}.key={key} names a {'list' if isinstance(value, ListConfig) else 'group'}, not a "
                        f"value{'; name an element, e.g. ' + key + '.0' if isinstance(value, ListConfig) else ''}")
        return False
    return True
