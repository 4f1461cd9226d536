"""Every registered searcher passes the conformance checks (adding one to SEARCHERS adds it)."""

from __future__ import annotations

import pytest

from baselines import SEARCHERS

# small settings that keep the suite fast; a searcher without an entry runs with its defaults
FAST = {
    "bo": {"n_initial": 3, "candidates": 128, "refine": 2, "restarts": 1},
    "hyperband": {"R": 9, "eta": 3},
    "pbt": {"population": 4, "epochs": 6, "interval": 2},
    "tpe": {"n_initial": 3},
}


@pytest.mark.parametrize("name", list(SEARCHERS))
def test_conformance(name, conformance_check):
    conformance_check(SEARCHERS[name], FAST.get(name, {}))
