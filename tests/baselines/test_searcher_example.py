"""The README's example of adding a searcher, run through the conformance suite.

The class below is the complete example (registering it would be one line in
`baselines.SEARCHERS`); here it is checked without touching the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from baselines import Searcher, SearcherError, Suggestion, random_params, require_bounded
from stn.space import HParam, Space


class PerturbedBest(Searcher):
    """Local search: a few random trials, then the best so far plus Gaussian noise (unit cube)."""

    name = "perturbed"

    @dataclass(frozen=True)
    class Options(Searcher.Options):
        n_initial: int = 3  # random trials first
        scale: float = 0.1  # standard deviation of the perturbation, in the unit cube

    def __init__(self, space: Space, seed: int, **options: Any) -> None:
        super().__init__(space, seed, **options)
        if not self.options.scale > 0:
            raise SearcherError(f"perturbed: scale must be > 0, got {self.options.scale!r}")
        require_bounded(space)  # a SpaceError names a half-bounded hyperparameter

    def _ask(self, trial_id: int) -> Suggestion | None:
        if trial_id < self.options.n_initial or self.best is None:
            return Suggestion(trial_id, random_params(self.space, self.seed, trial_id))
        rng = np.random.default_rng([self.seed, trial_id])  # derived: replay gives the same
        u = np.array(self.space.to_unit(self.best[1]))
        u = np.clip(u + self.options.scale * rng.standard_normal(len(u)), 0.0, 1.0)
        return Suggestion(trial_id, self.space.from_unit(u.tolist()))


def test_example_conforms(conformance_check):
    conformance_check(PerturbedBest, {})


def test_example_perturbs_the_best():
    space = Space.of(HParam("a", 0.0, 1.0, 0.5), HParam("b", 1e-3, 1.0, 0.1, log=True))
    s = PerturbedBest(space, 0, n_initial=2, scale=0.01)
    for _ in range(8):
        best = s.best
        a = s.ask()
        if a.id >= 2:  # within 6 standard deviations of the best at the time of the ask
            dist = np.subtract(space.to_unit(a.params), space.to_unit(best[1]))
            assert 0 < np.abs(dist).max() < 0.06
        s.tell(a.id, sum(space.to_unit(a.params)))
