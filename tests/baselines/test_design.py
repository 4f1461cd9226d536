"""The initial design covers every range, on its own scale, deterministically; a model-based
searcher waits for its results."""

from __future__ import annotations

import numpy as np
import pytest

from baselines import random_params
from baselines.design import sobol_design
from stn.space import HParam, Space

SPACE = Space.of(
    HParam("lr", 1e-4, 1.0, 1e-2, log=True),
    HParam("dropout", 0.0, 0.8, 0.5),
    HParam("layers", 1, 4, 2, integer=True),
    HParam("noise", 0.0, 1.0, 0.1),
    HParam("wd", 1e-6, 1e-2, 1e-4, log=True),
)


def units(design, n, seed):
    return np.array([SPACE.to_unit(design(n, seed, i)) for i in range(n)])


def test_every_range_is_covered():
    """The first two points of every seed sit in opposite halves of every range, the first four
    in four different quarters; independent draws miss a half often."""
    sobol = lambda n, seed, i: sobol_design(SPACE, seed, n, i)  # noqa: E731
    rand = lambda n, seed, i: random_params(SPACE, seed, i)  # noqa: E731
    halves_missed = {"sobol": 0, "random": 0}
    for seed in range(50):
        for name, design in (("sobol", sobol), ("random", rand)):
            u = units(design, 4, seed)
            halves = (u[:2] >= 0.5).sum(0)
            halves_missed[name] += int((halves != 1).sum())
            if name == "sobol":
                cont = u[:, [0, 1, 3, 4]]  # the integer's centres: 4 cells, one each
                assert all(len(set(np.floor(c * 4))) == 4 for c in cont.T)
                assert sorted(np.floor(u[:, 2] * 4)) == [0, 1, 2, 3]
    assert halves_missed["sobol"] == 0 and halves_missed["random"] > 50


def test_deterministic_and_checked():
    assert sobol_design(SPACE, 3, 5, 2) == sobol_design(SPACE, 3, 5, 2)
    assert sobol_design(SPACE, 3, 5, 2) != sobol_design(SPACE, 4, 5, 2)
    assert SPACE.validate(sobol_design(SPACE, 0, 5, 4))
    with pytest.raises(ValueError, match="not in an initial design of 5"):
        sobol_design(SPACE, 0, 5, 5)


def test_a_searcher_waits_only_while_its_design_is_part_told_and_part_running():
    from types import SimpleNamespace

    from baselines.design import waiting_for_design

    def trials(*statuses):
        return [SimpleNamespace(status=s) for s in statuses]

    assert waiting_for_design(trials("ok", None, None), 3)  # 1 of 3 told, 2 running
    assert not waiting_for_design(trials("ok", "failed", "ok", None), 3)  # the design is told
    assert not waiting_for_design(trials("ok", "ok"), 3)  # none running: nothing to wait for
    assert not waiting_for_design(trials(None, None), 0)  # no design
