"""The search-space vocabulary shared by STN and every baseline.

Pure Python on purpose (no torch import): the baselines import this module and nothing else
from `stn`. A hyperparameter is one `HParam`; a `Space` is an ordered, validated tuple of them.

Ranges:
- bounded `(low, high)`; with `log=True` the scale between them is logarithmic (low > 0);
- half-bounded `(low, inf)` (set `high=math.inf`); STN maps it with a softplus, baselines refuse
  it (they need a finite box) with an error naming it.
Integers: the values are the integers `low..high` inclusive. STN relaxes an integer
hyperparameter to the continuous interval `[low, high + 1)` and floors, so every integer in the
range (both ends included) is reachable and `init` maps to exactly `init` (no off-by-one between
initialisation and projection, a defect of the original code).
Perturbation: STN perturbs each hyperparameter per example (`"example"`) or once per batch
(`"batch"`, e.g. DropConnect rate, embedding dropout, AR/TAR coefficients).
STN's map from its unconstrained value u (`mapping`): "auto" is a stretched sigmoid onto a
bounded range and `low + softplus(u)` onto a half-bounded one; "softplus" maps a bounded range
with `low + softplus(u)` too, capped at `high` (the authors' map of the AR/TAR coefficients onto
(0, inf), while the baselines search the box (low, high)).
What STN's layers are conditioned on (`net_input`): "raw", the unconstrained u (the authors'
CNN and Table 1 LSTM), or "value", the hyperparameter's value in its range (the authors' code
with `--tune_all` on the LSTM fed sigmoid(u) and softplus(u), i.e. the rates and coefficients).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

__all__ = ["HParam", "Space", "SpaceError"]

PERTURB_KINDS = ("example", "batch")
MAPPINGS = ("auto", "softplus")
NET_INPUTS = ("raw", "value")


class SpaceError(ValueError):
    """An invalid hyperparameter or search space (a user mistake: one-line message)."""


@dataclass(frozen=True)
class HParam:
    name: str
    low: float
    high: float  # math.inf for a half-bounded range
    init: float
    log: bool = False
    integer: bool = False
    perturb: str = "example"  # "example" | "batch"
    mapping: str = "auto"  # STN's map of u: "auto" (sigmoid / softplus by range) | "softplus"
    net_input: str = "raw"  # what STN layers see: "raw" (u) | "value" (the mapped value)

    def __post_init__(self) -> None:
        n = self.name or "<unnamed>"
        if not self.name or not self.name.replace("_", "").replace(".", "").isalnum():
            raise SpaceError(f"hyperparameter name {self.name!r} must be a non-empty identifier")
        for attr in ("low", "high", "init"):
            v = getattr(self, attr)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or math.isnan(v):
                raise SpaceError(f"{n}: {attr} must be a number, got {v!r}")
        if math.isinf(self.low):
            raise SpaceError(f"{n}: low must be finite, got {self.low}")
        if not self.low < self.high:
            raise SpaceError(f"{n}: empty range ({self.low}, {self.high}); need low < high")
        if self.perturb not in PERTURB_KINDS:
            raise SpaceError(f"{n}: unknown perturb kind {self.perturb!r}; valid: {PERTURB_KINDS}")
        if self.mapping not in MAPPINGS:
            raise SpaceError(f"{n}: unknown mapping {self.mapping!r}; valid: {MAPPINGS}")
        if self.net_input not in NET_INPUTS:
            raise SpaceError(f"{n}: unknown net_input {self.net_input!r}; valid: {NET_INPUTS}")
        if self.mapping == "softplus" and (self.log or self.integer):
            raise SpaceError(f"{n}: mapping 'softplus' is for continuous linear-scale ranges")
        if self.log and self.low <= 0:
            raise SpaceError(f"{n}: a log-scale range needs low > 0, got low={self.low}")
        if self.integer:
            if self.log:
                raise SpaceError(f"{n}: integer hyperparameters cannot be log-scale")
            ends = (self.low, self.high) if self.bounded else (self.low,)
            if not all(float(e).is_integer() for e in ends):
                raise SpaceError(f"{n}: integer range ({self.low}, {self.high}) needs integer ends")
            if not float(self.init).is_integer():
                raise SpaceError(
                    f"{n}: integer hyperparameter needs an integer init, got {self.init}"
                )
        if not self.contains(self.init):
            raise SpaceError(f"{n}: init {self.init} outside the range ({self.low}, {self.high})")

    @property
    def bounded(self) -> bool:
        return math.isfinite(self.high)

    def contains(self, value: float) -> bool:
        if self.integer:
            return float(value).is_integer() and self.low <= value <= self.high
        return self.low <= value <= self.high

    # --- the unit interval, used by every baseline (grid, random, BO, Hyperband) ---
    def from_unit(self, u: float) -> float:
        """Map u in [0, 1] to a value (uniform, log-uniform, or one of the integers)."""
        self._need_bounded()
        u = min(max(float(u), 0.0), 1.0)
        if self.integer:
            n = int(self.high - self.low) + 1
            return float(int(self.low) + min(int(u * n), n - 1))
        if self.log:
            lo, hi = math.log(self.low), math.log(self.high)
            return min(max(math.exp(lo + u * (hi - lo)), self.low), self.high)
        return self.low + u * (self.high - self.low)

    def to_unit(self, value: float) -> float:
        """Inverse of `from_unit` (integers go to the centre of their cell)."""
        self._need_bounded()
        if self.integer:
            n = int(self.high - self.low) + 1
            return (float(value) - self.low + 0.5) / n
        if self.log:
            lo, hi = math.log(self.low), math.log(self.high)
            return (math.log(value) - lo) / (hi - lo)
        return (float(value) - self.low) / (self.high - self.low)

    def _need_bounded(self) -> None:
        if not self.bounded:
            raise SpaceError(
                f"{self.name}: half-bounded range ({self.low}, inf) cannot be searched by a "
                "baseline; give it a finite high"
            )


@dataclass(frozen=True)
class Space:
    """An ordered set of hyperparameters with unique names."""

    params: tuple[HParam, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        params = tuple(self.params)
        object.__setattr__(self, "params", params)
        for p in params:
            if not isinstance(p, HParam):
                raise SpaceError(f"a Space holds HParam objects, got {type(p).__name__}")
        names = [p.name for p in params]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise SpaceError(f"duplicate hyperparameter names: {', '.join(dup)}")
        # name -> column: looked up several times in every training step (HyperBatch[name])
        object.__setattr__(self, "_columns", {n: i for i, n in enumerate(names)})

    @classmethod
    def of(cls, *params: HParam) -> Space:
        return cls(tuple(params))

    def __len__(self) -> int:
        return len(self.params)

    def __iter__(self) -> Iterator[HParam]:
        return iter(self.params)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._columns

    def __getitem__(self, name: str) -> HParam:
        return self.params[self.index(name)]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def index(self, name: str) -> int:
        i = self._columns.get(name) if isinstance(name, str) else None
        if i is None:
            raise SpaceError(f"unknown hyperparameter {name!r}; valid: {', '.join(self.names)}")
        return i

    def subset(self, names: Iterable[str]) -> Space:
        return Space(tuple(self[n] for n in names))

    def init(self) -> dict[str, float]:
        return {p.name: float(p.init) for p in self.params}

    def validate(self, values: Mapping[str, float]) -> dict[str, float]:
        """Check a full assignment (every name, nothing else, inside its range)."""
        missing = [n for n in self.names if n not in values]
        extra = [n for n in values if n not in self]
        if missing or extra:
            raise SpaceError(
                f"hyperparameters do not match the space (missing: {missing or '-'}, "
                f"unknown: {extra or '-'}); valid: {', '.join(self.names)}"
            )
        out = {}
        for p in self.params:
            v = float(values[p.name])
            if not p.contains(v):
                raise SpaceError(f"{p.name}={v} outside its range ({p.low}, {p.high})")
            out[p.name] = v
        return out

    def from_unit(self, u: Iterable[float]) -> dict[str, float]:
        u = list(u)
        if len(u) != len(self):
            raise SpaceError(f"unit vector has {len(u)} entries; the space has {len(self)}")
        return {p.name: p.from_unit(x) for p, x in zip(self.params, u)}

    def to_unit(self, values: Mapping[str, float]) -> list[float]:
        return [p.to_unit(values[p.name]) for p in self.params]
