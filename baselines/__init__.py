"""Hyperparameter searchers compared with STN: pure ask/tell bookkeeping over a `stn.space.Space`.

    from baselines import Budget, make_searcher
    searcher = make_searcher("bo", space, seed=0, budget=Budget(trials=50))
    while not searcher.done:
        s = searcher.ask()                      # None: wait for a pending result
        searcher.tell(s.id, val_loss, epochs=..., seconds=...)

Adding a searcher is one file and one line:
1. In `baselines/mine.py`, subclass `Searcher`: set `name`; add options as fields of a frozen
   dataclass `Options(Searcher.Options)` (typed defaults; unknown options are refused by the
   base); implement `_ask(trial_id) -> Suggestion | None` returning a full assignment of the
   space (`random_params(space, seed, trial_id)` draws one; None means "wait for results").
   Optionally `_tell(trial)` to update a model, `_finished()` if the plan is finite,
   `_describe()` for extra settings. Keep every random draw derived from (seed, trial id) or
   from the results told, never from a global generator, so a replayed journal gives the same
   suggestions. Set `stochastic = False` if the seed is unused.
2. Register it in `SEARCHERS` below. The conformance suite (tests/baselines) then checks it:
   suggestions inside the space, integers integral, determinism under a seed, `best`,
   budgets, NaN results and replay.
"""

from __future__ import annotations

from typing import Any

from stn.space import Space

from .base import (
    STATUSES,
    Budget,
    ReplayError,
    Searcher,
    SearcherError,
    Suggestion,
    Trial,
    random_params,
    replay,
    require_bounded,
)
from .bo import BayesOpt
from .hyperband import Hyperband, hyperband_plan
from .pbt import PBT
from .simple import Fixed, Grid, RandomSearch
from .tpe import TPE

__all__ = [
    "SEARCHERS",
    "STATUSES",
    "BayesOpt",
    "Budget",
    "Fixed",
    "Grid",
    "Hyperband",
    "PBT",
    "RandomSearch",
    "ReplayError",
    "Searcher",
    "SearcherError",
    "Suggestion",
    "TPE",
    "Trial",
    "hyperband_plan",
    "make_searcher",
    "random_params",
    "replay",
    "require_bounded",
]

SEARCHERS: dict[str, type[Searcher]] = {
    "fixed": Fixed,
    "grid": Grid,
    "random": RandomSearch,
    "bo": BayesOpt,
    "tpe": TPE,
    "hyperband": Hyperband,
    "pbt": PBT,
}


def make_searcher(name: str, space: Space, seed: int, **options: Any) -> Searcher:
    """Build the searcher registered under `name`; unknown names list the valid ones."""
    if name not in SEARCHERS:
        raise SearcherError(f"unknown searcher {name!r}; valid: {', '.join(SEARCHERS)}")
    return SEARCHERS[name](space, seed, **options)
