"""Experiment specs: frozen dataclasses with typed defaults, dotted overrides, derived seeds.

An `Experiment` composes a task config (from `experiments.tasks`), the STN settings, the
methods it compares, seeds, a search budget, per-searcher options, Table-1 style variants,
launch settings and the overrides of its smoke variant. `apply_overrides` changes any leaf by a
dotted key (`task.epochs=3`, `budget.trials=20`, `launch.partition=gpu`), refusing unknown keys
(listing the valid ones) and values that do not parse to the field's type.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "STN_METHODS",
    "Budget",
    "Experiment",
    "SpecError",
    "Variant",
    "apply_overrides",
    "derive_seed",
    "smoke",
    "to_dict",
    "valid_keys",
]

VARIANT_USES = ("values", "final", "schedule")
SCHEDULE_EVERY = ("step", "epoch")  # Variant.every
STN_METHODS = ("stn", "delta-stn")  # trained by STN's loop; an experiment's stn_inits add more


class SpecError(ValueError):
    """An invalid spec or override (a user mistake: one-line message)."""


def _default_launch() -> Any:
    # Imported here so that building specs never needs submitit unless a default is used.
    from slurm.executors import Launch

    return Launch()


@dataclass(frozen=True)
class Budget:
    trials: int | None = 20  # trials per search (a grid: its own size when smaller)
    epochs: float | None = None  # total training epochs across a search's trials
    seconds: float | None = None  # wall-clock seconds of a search
    parallel: int = 4  # trials in flight at once
    # a search ends after this many failed trials in a row (errors, not divergence): trials
    # that fail at once would otherwise never use up a budget in epochs or seconds
    failures: int | None = 10

    def __post_init__(self) -> None:
        for name in ("trials", "epochs", "seconds", "failures"):
            v = getattr(self, name)
            if v is not None and not (0 < v < math.inf):
                raise SpecError(f"budget.{name} must be positive and finite or None, got {v}")
        if self.parallel < 1:
            raise SpecError(f"budget.parallel must be at least 1, got {self.parallel}")


@dataclass(frozen=True)
class Variant:
    """A fixed-hyperparameter run with a twist (a Table 1 row)."""

    values: Mapping[str, float] | None = None  # None: the space's initial values
    from_method: str | None = None  # e.g. "stn": take values from that method's run, same seed
    use: str = "values"  # "values" | "final" (from_method's final hparams) | "schedule" (replay)
    noise_std: Mapping[str, float] | None = None  # Gaussian noise per minibatch, per hparam
    sinusoid: Mapping[str, tuple[float, float]] | None = None  # name -> (amplitude, period)
    # "schedule" from an STN run: replay every hyper step's values ("step"), or per epoch the
    # values the STN had at that epoch's end ("epoch": the authors' train_basic.py)
    every: str = "step"

    def __post_init__(self) -> None:
        if self.use not in VARIANT_USES:
            valid = ", ".join(VARIANT_USES)
            raise SpecError(f"variant use {self.use!r} is unknown; valid: {valid}")
        if self.every not in SCHEDULE_EVERY:
            valid = ", ".join(SCHEDULE_EVERY)
            raise SpecError(f"variant every {self.every!r} is unknown; valid: {valid}")
        if self.use != "values" and not self.from_method:
            raise SpecError(f"variant use={self.use!r} needs from_method (e.g. 'stn')")
        for name, (_, period) in (self.sinusoid or {}).items():
            if period <= 0:
                raise SpecError(f"variant sinusoid period of {name} must be positive, got {period}")
        for name, std in (self.noise_std or {}).items():
            if std < 0:
                raise SpecError(f"variant noise_std of {name} must be >= 0, got {std}")


@dataclass(frozen=True)
class Experiment:
    name: str  # the CLI name, e.g. "cifar10-alexnet"
    reproduces: str  # what of the paper it reproduces, e.g. "Table 2, CIFAR-10 columns"
    task: Any  # a task config from experiments.tasks: .build(seed, device), .space(), .epochs
    stn: Any  # stn.STNConfig: settings of the STN / Delta-STN runs
    methods: tuple[str, ...]  # methods `run` runs without --methods
    seeds: tuple[int, ...] = (0, 1, 2)  # experiment seeds (trial seeds are derived from them)
    budget: Budget = field(default_factory=Budget)  # per search (each method and seed)
    searchers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # name -> options
    variants: Mapping[str, Variant] = field(default_factory=dict)  # extra fixed-loop methods
    launch: Any = field(default_factory=_default_launch)  # slurm.executors.Launch
    smoke: Mapping[str, Any] = field(default_factory=dict)  # dotted overrides of --smoke
    # extra STN methods started elsewhere: method name -> initial hyperparameter values
    stn_inits: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.seeds:
            raise SpecError(f"{self.name}: the seed list is empty; give at least one seed")
        bad = [s for s in self.seeds if isinstance(s, bool) or not isinstance(s, int) or s < 0]
        if bad:
            raise SpecError(f"{self.name}: seeds must be non-negative integers, got {bad}")
        if len(set(self.seeds)) != len(self.seeds):
            raise SpecError(f"{self.name}: repeated seeds {list(self.seeds)}")
        if not self.methods:
            raise SpecError(f"{self.name}: the method list is empty")
        if len(set(self.methods)) != len(self.methods):
            raise SpecError(f"{self.name}: repeated methods {list(self.methods)}")

    @property
    def stn_methods(self) -> tuple[str, ...]:
        """The methods STN's loop trains: stn, delta-stn and the extra starts of stn_inits."""
        return STN_METHODS + tuple(m for m in self.stn_inits if m not in STN_METHODS)


def derive_seed(seed: int, method: str, trial: int | None = None) -> int:
    """A stable seed in [0, 2**31) for (experiment seed, method, trial); never Python's hash()."""
    key = json.dumps([int(seed), str(method), None if trial is None else int(trial)])
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") >> 1


# --- serialisation ---------------------------------------------------------------------------


def to_dict(obj: Any) -> Any:
    """A JSON-able copy of a spec (dataclasses, mappings, tuples; other objects by repr)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)  # "inf" stays readable, JSON has none
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    return repr(obj)


# --- overrides -------------------------------------------------------------------------------


def _is_spec_node(v: Any) -> bool:
    return dataclasses.is_dataclass(v) and not isinstance(v, type)


def _hints(obj: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(type(obj))
    except Exception:  # unresolvable annotations: fall back to the current values' types
        return {}


def valid_keys(obj: Any, prefix: str = "") -> list[str]:
    """Every dotted key `apply_overrides` accepts on `obj` (mapping entries included)."""
    keys: list[str] = []
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if _is_spec_node(v):
            keys += valid_keys(v, f"{prefix}{f.name}.")
            continue
        keys.append(prefix + f.name)
        if isinstance(v, Mapping) and f.name != "smoke":
            for k, sub in v.items():
                if _is_spec_node(sub):
                    keys += valid_keys(sub, f"{prefix}{f.name}.{k}.")
                elif isinstance(sub, Mapping):
                    keys += [f"{prefix}{f.name}.{k}.{kk}" for kk in sub]
    return keys


def _unknown(key: str, root: Any) -> SpecError:
    keys = valid_keys(root)
    close = difflib.get_close_matches(key, keys, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return SpecError(f"unknown key {key!r}{hint}; valid: {', '.join(keys)}")


def _type_name(tp: Any) -> str:
    """Readable type names for error messages: 'int or none', 'comma-separated floats'."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(names + (["none"] if type(None) in args else []))
    if origin is tuple:
        inner = args[0] if args else Any
        return f"comma-separated {_type_name(inner)}s"
    if origin in (dict, Mapping, typing.Mapping) or tp in (dict, Mapping):
        return "a JSON object"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("true", "1", "yes", "on"):
        return True
    if low in ("false", "0", "no", "off"):
        return False
    raise ValueError(text)


def _parse(text: str, tp: Any, current: Any) -> Any:
    """Parse a command-line string to the type `tp` (or, if unknown, the current value's)."""
    if tp is None or tp is Any:
        tp = type(current) if current is not None else Any
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and text.strip().lower() in ("none", "null", ""):
            return None
        for a in (a for a in args if a is not type(None)):
            try:
                return _parse(text, a, current)
            except (ValueError, TypeError):
                pass
        raise ValueError(text)
    if tp is bool:
        return _parse_bool(text)
    if tp is int:
        return int(text.strip())
    if tp is float:
        value = float(text.strip())
        if not math.isfinite(value):  # "inf", "nan": no setting here means either
            raise ValueError(text)
        return value
    if tp is str:
        return text
    if origin is tuple or tp is tuple:
        parts = [p.strip() for p in text.split(",")] if text.strip() else []
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_parse(p, args[0], None) for p in parts)
        if args and len(args) != len(parts):
            raise ValueError(text)
        return tuple(_parse(p, a, None) for p, a in zip(parts, args or [Any] * len(parts)))
    if origin in (dict, Mapping, typing.Mapping) or tp in (dict, Mapping) or tp is Any:
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            if tp is Any:
                return text
            raise
        if tp is not Any and not isinstance(value, dict):
            raise ValueError(text)
        if not _all_finite(value):
            raise ValueError(text)
        return value
    if isinstance(tp, type):
        return tp(text)  # e.g. pathlib.Path
    raise ValueError(text)


def _all_finite(value: Any) -> bool:
    """No NaN or infinity in a value parsed from JSON (which reads "NaN", "Infinity")."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, Mapping):
        return all(_all_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_all_finite(v) for v in value)
    return True


def _check_value(value: Any, tp: Any, current: Any) -> Any:
    """Check a Python value (from a smoke mapping) against the field's type; ints widen."""
    if isinstance(value, str) and tp not in (str, Any, None) and not isinstance(current, str):
        return _parse(value, tp, current)
    if isinstance(value, int) and not isinstance(value, bool):
        if tp is float or (tp is None and isinstance(current, float)):
            return float(value)
    return value


def _set(obj: Any, parts: list[str], raw: Any, from_text: bool, root: Any, key: str) -> Any:
    """Return a copy of `obj` with the leaf at `parts` replaced."""
    head, rest = parts[0], parts[1:]
    if isinstance(obj, Mapping):
        if head not in obj:
            raise _unknown(key, root)
        new = dict(obj)
        if rest:
            new[head] = _set(obj[head], rest, raw, from_text, root, key)
        else:
            new[head] = _leaf(raw, None, obj[head], from_text, key)
        return new
    names = [f.name for f in dataclasses.fields(obj)] if _is_spec_node(obj) else []
    if head not in names:
        raise _unknown(key, root)
    current = getattr(obj, head)
    if rest:
        if not (_is_spec_node(current) or isinstance(current, Mapping)):
            raise _unknown(key, root)
        return dataclasses.replace(obj, **{head: _set(current, rest, raw, from_text, root, key)})
    if _is_spec_node(current):
        sub = ", ".join(f"{key}.{f.name}" for f in dataclasses.fields(current))
        raise SpecError(f"{key!r} is a section, not a value; set one of: {sub}")
    tp = _hints(obj).get(head)
    return dataclasses.replace(obj, **{head: _leaf(raw, tp, current, from_text, key)})


def _leaf(raw: Any, tp: Any, current: Any, from_text: bool, key: str) -> Any:
    want = _type_name(tp) if tp not in (None, Any) else _type_name(type(current))
    want = want.replace("float", "finite number")
    try:
        return _parse(raw, tp, current) if from_text else _check_value(raw, tp, current)
    except (ValueError, TypeError):
        raise SpecError(f"{key}: expected {want}, got {raw!r}") from None


def apply_overrides(exp: Experiment, overrides: Iterable[str] | Mapping[str, Any]) -> Experiment:
    """Apply dotted overrides: strings "key=value" (parsed) or a mapping key -> Python value.

    Raises SpecError on an unknown key (listing the valid ones), a value of the wrong type
    (naming the expected type), or a resulting spec that is invalid (e.g. a negative budget).
    """
    if isinstance(overrides, Mapping):
        items = [(k, v, False) for k, v in overrides.items()]
    else:
        items = []
        for text in overrides:
            key, sep, value = text.partition("=")
            if not sep or not key.strip():
                raise SpecError(f"override {text!r} is not KEY=VALUE (e.g. task.epochs=3)")
            items.append((key.strip(), value, True))
    # A component validates itself on every change, so one override may be valid only once
    # another is applied (launch.timeout_min=1 needs a shorter launch.signal_delay_s): an
    # override its component refuses waits for the others, in rounds, until none progresses.
    while items:
        waiting: list[tuple[str, Any, bool, Exception]] = []
        for key, value, from_text in items:
            try:
                exp = _set(exp, key.split("."), value, from_text, exp, key)
            except SpecError:
                raise
            except (ValueError, TypeError) as e:  # a component's own check, e.g. SpaceError
                waiting.append((key, value, from_text, e))
        if len(waiting) == len(items):
            key, value, _, e = waiting[0]
            raise SpecError(f"{key}={value}: {e}") from None
        items = [(k, v, t) for k, v, t, _ in waiting]
    return exp


def smoke(exp: Experiment) -> Experiment:
    """The experiment's smoke variant (its `smoke` overrides applied)."""
    return apply_overrides(exp, exp.smoke)
