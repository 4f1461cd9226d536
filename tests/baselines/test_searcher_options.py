"""Registry, options, budgets, tells and replay errors; grid, fixed and random specifics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from baselines import (
    SEARCHERS,
    Budget,
    Fixed,
    Grid,
    RandomSearch,
    ReplayError,
    SearcherError,
    make_searcher,
    replay,
)
from stn.space import HParam, Space, SpaceError

SPACE = Space.of(
    HParam("lr", 1e-4, 1.0, 1e-2, log=True),
    HParam("dropout", 0.0, 0.8, 0.5),
    HParam("layers", 1, 5, 2, integer=True),
)


def test_registry_and_unknown_names():
    assert make_searcher("random", SPACE, 0).name == "random"
    assert all(cls.name == key for key, cls in SEARCHERS.items())
    with pytest.raises(SearcherError, match="unknown searcher 'smac'; valid: fixed, grid, random"):
        make_searcher("smac", SPACE, 0)
    with pytest.raises(SearcherError, match=r"unknown option\(s\) point; valid: budget, params"):
        make_searcher("grid", SPACE, 0, point=3)


def test_budget():
    b = Budget(trials=3, epochs=10.0)
    assert not b.exhausted({"trials": 2, "epochs": 9.0}) and b.exhausted({"trials": 3})
    assert Budget(seconds=60).exhausted({"seconds": 61.0}) and not Budget().exhausted({"trials": 9})
    for bad in ({"trials": -1}, {"trials": 2.5}, {"epochs": "10"}):
        with pytest.raises(SearcherError, match="non-negative"):
            Budget(**bad)
    with pytest.raises(SearcherError, match="unknown budget key.*valid: trials, epochs, seconds"):
        Budget.coerce({"trial": 3})


def test_tell_mistakes():
    s = RandomSearch(SPACE, 0)
    a = s.ask()
    with pytest.raises(SearcherError, match="unknown trial 7"):
        s.tell(7, 1.0)
    with pytest.raises(SearcherError, match="unknown status 'crashed'; valid"):
        s.tell(a.id, 1.0, status="crashed")
    s.tell(a.id, 1.0, epochs=2, seconds=3.5)
    with pytest.raises(SearcherError, match="already told"):
        s.tell(a.id, 0.5)
    assert s.spent == {"trials": 1, "epochs": 2.0, "seconds": 3.5}


def test_replay_rejects_another_seed():
    s = RandomSearch(SPACE, 0)
    s.tell(s.ask().id, 1.0)
    with pytest.raises(ReplayError, match="different seed, options or code"):
        replay(RandomSearch(SPACE, 1), s.events)


def test_fixed_values():
    assert Fixed(SPACE, 0).ask().params == SPACE.init()
    s = Fixed(SPACE, 0, values={"dropout": 0.1})
    assert s.ask().params == {**SPACE.init(), "dropout": 0.1} and s.ask() is None
    with pytest.raises(SpaceError, match="dropout=0.9 outside"):
        Fixed(SPACE, 0, values={"dropout": 0.9})


def test_grid_axes_log_integers_and_order():
    g = Grid(SPACE, 0, params=["lr", "layers"], points={"lr": 3, "layers": 4})
    assert g.axes["lr"] == pytest.approx([1e-4, 1e-2, 1.0], rel=1e-12)  # log scale, exact ends
    assert g.axes["lr"][0] == 1e-4 and g.axes["layers"] == [1.0, 2.0, 4.0, 5.0]
    asked = []
    while not g.done:
        a = g.ask()
        asked.append((a.params["lr"], a.params["layers"], a.params["dropout"]))
        g.tell(a.id, 0.0)
    assert len(asked) == 12 and asked[:2] == [(1e-4, 1.0, 0.5), (1e-4, 2.0, 0.5)]
    assert asked[-1] == (1.0, 5.0, 0.5)
    assert g.describe()["size"] == 12
    assert Grid(SPACE, 0, params=["layers"], points=9).axes["layers"] == [1.0, 2.0, 3.0, 4.0, 5.0]
    ints = Grid(Space.of(HParam("n", 0, 100, 0, integer=True)), 0, points=7).axes["n"]
    assert ints == sorted(set(ints)) and len(ints) == 7 and ints[0] == 0 and ints[-1] == 100


@pytest.mark.parametrize(
    "options, error, match",
    [({"params": ["lr", "momentum"]}, SpaceError, "unknown hyperparameter 'momentum'"),
     ({"points": 1}, SearcherError, "points for lr must be an integer >= 2"),
     ({"params": ["lr"], "points": {"dropout": 3}}, SearcherError, "points for lr")],
)  # fmt: skip
def test_grid_mistakes(options, error, match):
    with pytest.raises(error, match=match):
        Grid(SPACE, 0, **options)


def test_random_respects_scales():
    s = RandomSearch(SPACE, 0)
    draws = [s.ask().params for _ in range(2000)]
    lr = np.array([d["lr"] for d in draws])
    assert 0.45 < np.mean(lr < 1e-2) < 0.55  # log-uniform: the geometric midpoint splits it
    layers = np.array([d["layers"] for d in draws])
    counts = np.unique(layers, return_counts=True)  # uniform over the five integers
    assert counts[0].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0] and counts[1].min() > 320
    with pytest.raises(SpaceError, match="w: half-bounded"):
        RandomSearch(Space.of(HParam("w", 0.0, math.inf, 1.0)), 0)
