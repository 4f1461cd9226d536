"""The ask/tell interface every searcher implements, search budgets, and journal replay.

A searcher is pure bookkeeping over a `Space`: the driver asks for a `Suggestion`, trains it, and
tells the searcher the validation loss. Nothing here trains, sleeps or touches files.

Determinism: a searcher's suggestions are a function of (seed, options, the sequence of asks
and tells) only. Every ask that returns a suggestion and every tell is appended to
`searcher.events` (JSON-able dicts); the driver journals them, and after an interruption
`replay(fresh_searcher, events)` rebuilds the identical state. An ask that returns None changes
nothing, so it is not journalled.

Loop, for a driver:

    while not searcher.done:
        s = searcher.ask()           # None: wait for a pending result, then tell it
        ...                          # train s.params (for s.budget epochs, from s.resume_from)
        searcher.tell(s.id, val_loss, status="ok", epochs=..., seconds=...)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, is_dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np

from stn.space import Space

__all__ = [
    "STATUSES",
    "Budget",
    "ReplayError",
    "Searcher",
    "SearcherError",
    "Suggestion",
    "Trial",
    "random_params",
    "replay",
    "require_bounded",
]

STATUSES = ("ok", "failed", "diverged")  # the run store's result statuses


class SearcherError(ValueError):
    """A user mistake with a searcher (unknown name or option, bad tell): one-line message."""


class ReplayError(SearcherError):
    """A journal that does not match the searcher replaying it (other seed, options or code)."""


@dataclass(frozen=True)
class Suggestion:
    id: int  # trial id: 0, 1, 2, ... in the order of the asks
    params: dict[str, float]  # a full assignment of the space
    budget: float | None = None  # epochs to train to (Hyperband rungs); None: the default
    resume_from: int | None = None  # a trial whose checkpoint this one continues (Hyperband)


@dataclass(frozen=True)
class Budget:
    """When a search ends: the first limit reached (None = no limit on that quantity)."""

    trials: int | None = None  # results told (failed ones included)
    epochs: float | None = None  # summed over trials, as told
    seconds: float | None = None  # summed over trials, as told (a driver may pass wall-clock)

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            ok = v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0)
            if f.name == "trials" and v is not None:
                ok = ok and float(v).is_integer()
            if not ok:
                raise SearcherError(f"budget {f.name} must be a non-negative number, got {v!r}")

    @classmethod
    def coerce(cls, value: Budget | Mapping[str, float] | None) -> Budget:
        if value is None:
            return cls()
        if isinstance(value, Budget):
            return value
        if isinstance(value, Mapping):
            valid = [f.name for f in fields(cls)]
            unknown = [k for k in value if k not in valid]
            if unknown:
                raise SearcherError(f"unknown budget key(s) {unknown}; valid: {', '.join(valid)}")
            return cls(**value)
        raise SearcherError(f"a budget is a Budget or a dict, got {type(value).__name__}")

    def exhausted(self, spent: Mapping[str, float]) -> bool:
        limits = ((f.name, getattr(self, f.name)) for f in fields(self))
        return any(lim is not None and spent.get(k, 0) >= lim for k, lim in limits)


@dataclass
class Trial:
    suggestion: Suggestion
    loss: float | None = None  # None while pending; math.inf when failed, diverged or NaN
    status: str | None = None


S = TypeVar("S", bound="Searcher")


class Searcher:
    """Base class: subclasses set `name`, extend `Options` and implement `_ask`.

    Hooks: `_ask(trial_id) -> Suggestion | None` (None: nothing to propose until more results),
    `_tell(trial)` (after the base has recorded it), `_finished()` (a finite plan is complete),
    `_describe()` (extra JSON-able settings). Set `stochastic = False` if the seed is unused,
    `finite_plan = True` if the searcher ends by itself (`_finished`; a trial budget is then not
    needed), and `replay_adopts = True` if proposals depend on the results only (replay then
    takes the journal's suggestions instead of recomputing them). What a driver must do for a
    searcher: `resumes_from_parent = True` if a trial may continue an earlier one's checkpoint
    (`Suggestion.resume_from`; the driver keeps checkpoints), `scores_own_segment = True` if
    such a trial is to be scored on its own evaluations only, not on its parent's best (PBT
    ranks members by how they do now), `independent_trials = True` if
    proposals never depend on results (a driver may submit them all at once, e.g. as one job
    array), `asks_in_generations = True` if proposals come in generations, each depending on
    the earlier ones only (ask returns None until a generation is told: a driver may submit
    each generation as one job array). `_check_int`, `_check_number` and
    `_check_choice` validate a subclass's own options.
    """

    name: ClassVar[str] = "searcher"
    stochastic: ClassVar[bool] = True
    finite_plan: ClassVar[bool] = False
    replay_adopts: ClassVar[bool] = False
    resumes_from_parent: ClassVar[bool] = False
    scores_own_segment: ClassVar[bool] = False
    independent_trials: ClassVar[bool] = False
    asks_in_generations: ClassVar[bool] = False

    @dataclass(frozen=True)
    class Options:
        budget: Budget | Mapping[str, float] | None = None  # None: no limit

    def __init__(self, space: Space, seed: int, **options: Any) -> None:
        valid = [f.name for f in fields(self.Options)]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise SearcherError(
                f"{self.name}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(valid)}"
            )
        if not isinstance(space, Space):
            raise SearcherError(f"{self.name}: space must be a stn.space.Space")
        self._check_int("seed", seed, 0)
        self.space, self.seed = space, int(seed)
        self.options = self.Options(**options)
        self.budget = Budget.coerce(self.options.budget)
        self.trials: dict[int, Trial] = {}
        self.events: list[dict[str, Any]] = []
        self._spent = {"trials": 0, "epochs": 0.0, "seconds": 0.0}
        self._best: int | None = None

    def _check_int(self, key: str, value: Any, low: int) -> None:
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise SearcherError(f"{self.name}: {key} must be an integer >= {low}, got {value!r}")

    def _check_number(self, key: str, value: Any, low: float, high: float,
                      low_ok: bool = True) -> None:  # fmt: skip
        ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
        ok = ok and math.isfinite(value) and (value >= low if low_ok else value > low)
        if not (ok and value <= high):
            lo = f"{'>=' if low_ok else '>'} {low}"
            hi = "" if math.isinf(high) else f" and <= {high}"
            raise SearcherError(f"{self.name}: {key} must be a number {lo}{hi}, got {value!r}")

    def _check_choice(self, key: str, value: Any, choices: Sequence[str]) -> None:
        if value not in choices:
            raise SearcherError(
                f"{self.name}: unknown {key} {value!r}; valid: {', '.join(choices)}"
            )

    # --- the interface ---
    def ask(self) -> Suggestion | None:
        """The next trial to run, or None (nothing now: wait for a result; or `done`)."""
        if self.done or self._trial_cap_reached():
            return None
        s = self._ask(len(self.trials))
        return None if s is None else self._record(s)

    def tell(
        self,
        trial_id: int,
        val_loss: float | None,
        *,
        status: str = "ok",
        epochs: float = 0.0,
        seconds: float = 0.0,
    ) -> None:
        """Record a result; NaN/inf/None losses and failed/diverged trials count as the worst."""
        trial = self.trials.get(trial_id)
        if trial is None:
            raise SearcherError(f"{self.name}: tell for unknown trial {trial_id!r}")
        if trial.status is not None:
            raise SearcherError(f"{self.name}: trial {trial_id} was already told")
        if status not in STATUSES:
            raise SearcherError(f"{self.name}: unknown status {status!r}; valid: {STATUSES}")
        if not (epochs >= 0 and seconds >= 0):
            raise SearcherError(f"{self.name}: epochs and seconds must be >= 0")
        loss = math.nan if val_loss is None else float(val_loss)
        finite = status == "ok" and math.isfinite(loss)
        trial.loss, trial.status = (loss if finite else math.inf), status
        self.events.append(
            {"event": "tell", "id": trial_id, "val_loss": loss if math.isfinite(loss) else None,
             "status": status, "epochs": float(epochs), "seconds": float(seconds)}
        )  # fmt: skip
        self._spent["trials"] += 1
        self._spent["epochs"] += float(epochs)
        self._spent["seconds"] += float(seconds)
        if finite and (self._best is None or loss < self.trials[self._best].loss):
            self._best = trial_id
        self._tell(trial)

    @property
    def done(self) -> bool:
        """No more suggestions will come (pending trials may still be told)."""
        return self._finished() or self.budget.exhausted(self._spent)

    @property
    def best(self) -> tuple[int, dict[str, float], float] | None:
        """(trial id, params, loss) of the lowest finite loss told so far."""
        if self._best is None:
            return None
        t = self.trials[self._best]
        return t.suggestion.id, dict(t.suggestion.params), float(t.loss)

    @property
    def spent(self) -> dict[str, float]:
        return dict(self._spent)

    @property
    def pending(self) -> list[int]:
        return [i for i, t in self.trials.items() if t.status is None]

    def checkpoints_needed(self) -> set[int] | None:
        """For a searcher whose trials continue earlier ones (`resumes_from_parent`): the
        trials whose checkpoints a pending or later suggestion may still continue, so that a
        driver can delete the others; None (the default) keeps every checkpoint."""
        return None

    def describe(self) -> dict[str, Any]:
        """JSON-able settings and plan, recorded in search.json."""
        opts = {f.name: _jsonable(getattr(self.options, f.name)) for f in fields(self.Options)}
        opts["budget"] = asdict(self.budget)
        out = {"searcher": self.name, "seed": self.seed, "options": opts}
        out["space"] = list(self.space.names)
        return {**out, **self._describe()}

    # --- hooks for subclasses ---
    def _ask(self, trial_id: int) -> Suggestion | None:
        raise NotImplementedError

    def _tell(self, trial: Trial) -> None:
        pass

    def _finished(self) -> bool:
        return False

    def _describe(self) -> dict[str, Any]:
        return {}

    # --- helpers ---
    def _trial_cap_reached(self) -> bool:
        return self.budget.trials is not None and len(self.trials) >= self.budget.trials

    def _record(self, s: Suggestion) -> Suggestion:
        if s.id != len(self.trials):
            raise SearcherError(f"{self.name}: suggestion id {s.id}, expected {len(self.trials)}")
        s = Suggestion(s.id, self.space.validate(s.params), s.budget, s.resume_from)
        self.trials[s.id] = Trial(s)
        self.events.append({"event": "ask", **asdict(s)})
        return s

    def _replay_ask(self, expected: Suggestion) -> Suggestion | None:
        if self.replay_adopts and not self.done and not self._trial_cap_reached():
            return self._record(expected)
        return self.ask()


def replay(searcher: S, events: Iterable[Mapping[str, Any]]) -> S:
    """Feed a journal of asks and tells (`searcher.events` of an earlier run) to a fresh searcher
    built with the same seed and options; raises ReplayError if it would have asked otherwise."""
    for k, e in enumerate(events):
        kind = e.get("event")
        if kind == "ask":
            expected = Suggestion(
                int(e["id"]), dict(e["params"]), e.get("budget"), e.get("resume_from")
            )
            got = searcher._replay_ask(expected)
            if got != expected:
                raise ReplayError(
                    f"journal event {k} asks {expected} but {searcher.name} proposes {got}: "
                    "different seed, options or code"
                )
        elif kind == "tell":
            loss = e.get("val_loss")
            searcher.tell(
                int(e["id"]), math.nan if loss is None else loss, status=e.get("status", "ok"),
                epochs=e.get("epochs", 0.0), seconds=e.get("seconds", 0.0),
            )  # fmt: skip
        else:
            raise ReplayError(f"journal event {k} has kind {kind!r}; valid: ask, tell")
    return searcher


def random_params(space: Space, seed: int, trial_id: int) -> dict[str, float]:
    """A uniform (log-uniform, integer) draw for one trial, from a generator derived from
    (seed, trial id): independent of how many draws came before."""
    u = np.random.default_rng([seed, trial_id]).random(len(space))
    return space.from_unit(u.tolist())


def require_bounded(space: Space) -> None:
    """Raise SpaceError naming the first half-bounded hyperparameter (baselines need a box)."""
    for p in space:
        p.from_unit(0.5)


def _jsonable(v: Any) -> Any:
    if is_dataclass(v) and not isinstance(v, type):
        return asdict(v)
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v
