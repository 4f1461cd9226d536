"""The README's example of adding a searcher, run through the conformance suite.

The class is taken from README.md itself (the block marked `readme-test: searcher`), so the
example users copy is the one checked here; registering it would be one line in
`baselines.SEARCHERS`, and here it is checked without touching the registry.
"""

from __future__ import annotations

import sys
import types

import numpy as np

from stn.space import HParam, Space
from tests.readme_blocks import readme_block

_module = sys.modules.setdefault("readme_searcher", types.ModuleType("readme_searcher"))
exec(compile(readme_block("searcher"), "README.md", "exec"), _module.__dict__)
PerturbedBest = _module.PerturbedBest


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
