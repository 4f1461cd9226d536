"""The model-free searchers: fixed settings, a grid, and random search."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stn.space import HParam, Space

from .base import Searcher, SearcherError, Suggestion, random_params, require_bounded

__all__ = ["Fixed", "Grid", "RandomSearch", "grid_axis"]


class Fixed(Searcher):
    """One trial at given settings (by default the space's initial values, STN's starting point)."""

    name = "fixed"
    stochastic = False
    finite_plan = True
    independent_trials = True

    @dataclass(frozen=True)
    class Options(Searcher.Options):
        values: Mapping[str, float] | None = None  # overrides of space.init(); others keep init

    def __init__(self, space: Space, seed: int, **options: Any) -> None:
        super().__init__(space, seed, **options)
        self.values = space.validate({**space.init(), **(self.options.values or {})})

    def _ask(self, trial_id: int) -> Suggestion | None:
        return Suggestion(trial_id, dict(self.values)) if trial_id == 0 else None

    def _finished(self) -> bool:
        return len(self.trials) == 1 and not self.pending

    def _describe(self) -> dict[str, Any]:
        return {"values": dict(self.values)}


def grid_axis(p: HParam, points: int) -> list[float]:
    """`points` values from low to high, evenly spaced on p's scale (log scale respected).
    Integers: distinct integers, all of them if there are at most `points`."""
    if p.integer:
        n = int(p.high - p.low) + 1
        if points >= n:
            return [float(p.low + i) for i in range(n)]
        # floor(i (n-1) / (points-1) + 1/2) in exact integer arithmetic; with a step >= 1 the
        # values are distinct
        den = 2 * (points - 1)
        return [float(p.low + (2 * i * (n - 1) + points - 1) // den) for i in range(points)]
    inner = [p.from_unit(i / (points - 1)) for i in range(1, points - 1)]
    return [float(p.low), *inner, float(p.high)]  # the ends exactly (exp(log(x)) != x)


class Grid(Searcher):
    """The full grid over a subset of the hyperparameters (the others at their initial values);
    the last named hyperparameter varies fastest."""

    name = "grid"
    stochastic = False
    finite_plan = True
    independent_trials = True

    @dataclass(frozen=True)
    class Options(Searcher.Options):
        params: Sequence[str] | None = None  # None: every hyperparameter
        points: int | Mapping[str, int] = 5  # per dimension, or a dict name -> points

    def __init__(self, space: Space, seed: int, **options: Any) -> None:
        super().__init__(space, seed, **options)
        names = list(self.options.params) if self.options.params is not None else space.names
        if not names or len(set(names)) != len(names):
            raise SearcherError(f"grid: params must be distinct names of {', '.join(space.names)}")
        require_bounded(space.subset(names))  # a SpaceError names an unknown or half-bounded one
        pts = self.options.points
        pts = dict(pts) if isinstance(pts, Mapping) else dict.fromkeys(names, pts)
        for n in names:
            self._check_int(f"points for {n}", pts.get(n), 2)
        extra = sorted(set(pts) - set(names))
        if extra:
            raise SearcherError(f"grid: points given for {extra}, not in params {names}")
        self.axes = {n: grid_axis(space[n], pts[n]) for n in names}
        self.size = math.prod(len(a) for a in self.axes.values())  # never listed: 5^15 is a lot

    def _ask(self, trial_id: int) -> Suggestion | None:
        if trial_id >= self.size:
            return None
        point, rest = {}, trial_id  # trial_id in mixed radix, the last axis varying fastest
        for name, axis in reversed(self.axes.items()):
            rest, i = divmod(rest, len(axis))
            point[name] = axis[i]
        return Suggestion(trial_id, {**self.space.init(), **point})

    def _finished(self) -> bool:
        return len(self.trials) == self.size and not self.pending

    def _describe(self) -> dict[str, Any]:
        return {"axes": {k: list(v) for k, v in self.axes.items()}, "size": self.size}


class RandomSearch(Searcher):
    """Independent uniform draws (log-uniform on log scales, integers uniform over low..high);
    trial k uses a generator seeded by (seed, k)."""

    name = "random"
    independent_trials = True

    def __init__(self, space: Space, seed: int, **options: Any) -> None:
        super().__init__(space, seed, **options)
        require_bounded(space)

    def _ask(self, trial_id: int) -> Suggestion | None:
        return Suggestion(trial_id, random_params(self.space, self.seed, trial_id))
