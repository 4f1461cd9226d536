"""TPE: the Parzen estimators' rules (Optuna 5's defaults), parallel asks, and that it learns."""

from __future__ import annotations

import math

import numpy as np
import pytest

from baselines import TPE, Budget, RandomSearch, SearcherError
from baselines.design import sobol_design
from baselines.tpe import ParzenEstimator, bandwidths, trial_weights
from stn.space import HParam, Space

SPACE = Space.of(
    HParam("lr", 1e-4, 1.0, 1e-2, log=True),
    HParam("dropout", 0.0, 0.8, 0.5),
    HParam("layers", 1, 5, 2, integer=True),
)
OPTIMUM = np.array([0.3, 0.6, 0.5])  # in the unit cube


def bowl(p: dict[str, float]) -> float:
    return float(((np.array(SPACE.to_unit(p)) - OPTIMUM) ** 2).sum())


def test_univariate_conforms(conformance_check):
    conformance_check(TPE, {"n_initial": 3, "multivariate": False})


def test_bandwidths_are_the_larger_gap_clipped():
    mus = np.array([[0.6], [0.1], [0.2]])
    # sorted 0.1, 0.2, 0.6: the outer kernels look inwards (0.1, 0.4), the middle one takes
    # its larger gap (0.4); the smallest allowed is 1 / (3 + 2) = 0.2
    assert bandwidths(mus)[:, 0] == pytest.approx([0.4, 0.2, 0.4])
    assert bandwidths(np.array([[0.3]]))[0, 0] == pytest.approx(0.7)  # alone: the faces count
    many = np.linspace(0, 1, 500)[:, None]
    assert bandwidths(many).min() == pytest.approx(0.01)  # the clip stops at 1 / 100


def test_older_trials_weigh_less_beyond_25():
    assert trial_weights(3).tolist() == [1.0, 1.0, 1.0]
    w = trial_weights(30)
    assert w[-25:].tolist() == [1.0] * 25 and w[0] == pytest.approx(1 / 30)
    assert np.all(np.diff(w) >= 0)


def test_parzen_estimator_is_a_density_on_the_cube():
    x = np.array([[0.1, 0.3], [0.15, 0.9], [0.7, 0.5]])
    cells = np.array([0, 4])  # the second dimension: four integers
    pe = ParzenEstimator(x, cells, prior_weight=1.0)
    assert pe.weights.tolist() == pytest.approx([0.25] * 4)
    g = (np.arange(4000) + 0.5) / 4000
    grid = np.stack([np.repeat(g, 4), np.tile((np.arange(4) + 0.5) / 4, 4000)], axis=1)
    # midpoint rule over the continuous axis, the four cells of the integer one
    assert np.exp(pe.log_pdf(grid, joint=True)).mean() == pytest.approx(1.0, abs=1e-6)
    per_dim = np.exp(pe.log_pdf(grid, joint=False))  # each marginal integrates to 1
    assert per_dim.mean(axis=0) == pytest.approx([1.0, 1.0], abs=1e-6)
    draws = pe.sample(np.random.default_rng(0), 20000, joint=True)
    assert draws.min() >= 0 and draws.max() <= 1
    # draws follow the density: the share below 0.2 on the first axis matches its integral
    inside = np.exp(pe.log_pdf(grid[grid[:, 0] < 0.2], joint=False)[:, 0]).sum() / grid.shape[0]
    assert np.mean(draws[:, 0] < 0.2) == pytest.approx(inside, abs=0.01)


def test_an_integer_cell_is_scored_by_its_mass():
    pe = ParzenEstimator(np.array([[0.1], [0.3]]), np.array([2]), prior_weight=1.0)
    a, b, c, d = pe.log_pdf(np.array([[0.01], [0.49], [0.5], [0.99]]), joint=True)
    assert a == b and c == d and abs(a - c) > 0.1  # one value per cell, and they differ
    # the kernel at 0.1 (width 0.2): its mass in cell [0, 0.5] over its mass in [0, 1]
    assert np.exp(a) > np.exp(c)


def test_waits_for_the_initial_results_then_uses_the_model(monkeypatch):
    t = TPE(SPACE, 0, n_initial=3)
    built = []  # the estimators the model was built with, counted where they are built
    estimators = TPE.estimators
    monkeypatch.setattr(TPE, "estimators", lambda self: built.append(estimators(self)) or built[-1])
    first = [t.ask() for _ in range(3)]
    assert [s.params for s in first] == [sobol_design(SPACE, 0, 3, i) for i in range(3)]
    t.tell(0, bowl(first[0].params))
    assert t.ask() is None and built == []  # one result, two running: no model yet
    for s in first[1:]:
        t.tell(s.id, bowl(s.params))
    assert t.ask().id == 3 and len(built) == 1 and built[0] is not None  # the model proposed


def test_pending_trials_count_as_bad():
    t = TPE(SPACE, 0, n_initial=4)
    for _ in range(4):
        s = t.ask()
        t.tell(s.id, bowl(s.params))
    p = t.ask()
    good, bad = t.estimators()
    assert any(np.allclose(m, SPACE.to_unit(p.params)) for m in bad.mus)
    honest = TPE(SPACE, 0, n_initial=4, liar=False)
    honest.trials, honest._best = t.trials, t._best
    assert len(honest.estimators()[1].mus) == len(bad.mus) - 1


def test_learns_faster_than_random():
    def median_best(cls, **options) -> float:
        best = []
        for seed in range(7):
            s = cls(SPACE, seed, budget=Budget(trials=40), **options)
            while not s.done:
                a = s.ask()
                s.tell(a.id, bowl(a.params))
            best.append(s.best[2])
        return float(np.median(best))

    assert median_best(TPE) < 0.5 * median_best(RandomSearch)
    assert median_best(TPE, multivariate=False) < 0.5 * median_best(RandomSearch)


def test_failures_are_bad_and_never_good():
    t = TPE(SPACE, 0, n_initial=3)
    for loss in (math.nan, math.inf, 1.0):
        t.tell(t.ask().id, loss)
    good, bad = t.estimators()
    assert len(good.mus) == 2 and len(bad.mus) == 3  # one trial + the prior; two + the prior
    assert np.allclose(good.mus[0], SPACE.to_unit(t.trials[2].suggestion.params))


@pytest.mark.parametrize(
    "options, match",
    [({"gamma": 0.0}, r"gamma must be a number > 0 and <= 1, got 0.0"),
     ({"gamma": True}, r"gamma must be a number > 0 and <= 1, got True"),
     ({"prior_weight": -1.0}, r"prior_weight must be a number > 0, got -1.0"),
     ({"prior_weight": math.inf}, r"prior_weight must be a number > 0, got inf"),
     ({"candidates": 0}, "candidates must be an integer >= 1")],
)  # fmt: skip
def test_bad_options(options, match):
    with pytest.raises(SearcherError, match=match):
        TPE(SPACE, 0, **options)
