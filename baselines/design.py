"""Initial designs: where a model-based searcher puts its first trials, before it has a model."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from stn.space import Space

__all__ = ["sobol_design", "waiting_for_design"]


def sobol_design(space: Space, seed: int, n: int, trial_id: int) -> dict[str, float]:
    """Trial `trial_id` (< n) of the first n points of a scrambled Sobol sequence drawn from
    `seed`, mapped to the space (log scales, integers) by `from_unit`.

    Independent draws often leave a range mostly empty (three land in one half of a range one
    time in four), and a model fitted to them then searches only there: on the digits demo
    (5 hyperparameters, 3 initial trials) one seed's GP never left a bad corner. Sobol points
    spread over every range and every pair of ranges; Ax, BoTorch and SMAC start with them."""
    if not 0 <= trial_id < n:
        raise ValueError(f"trial {trial_id} is not in an initial design of {n}")
    engine = torch.quasirandom.SobolEngine(len(space), scramble=True, seed=seed)
    u = engine.draw(n, dtype=torch.float64)[trial_id]
    return space.from_unit(u.tolist())


def waiting_for_design(trials: Iterable[Any], n: int) -> bool:
    """True while fewer than n of `trials` (a searcher's `Trial`s) have a result and some are
    still running: a model-based searcher's ask then returns None, as Ax's generation strategies
    wait for the initial design's data, instead of fitting its model to part of the design and
    its pending trials."""
    statuses = [t.status for t in trials]
    return None in statuses and sum(s is not None for s in statuses) < n
