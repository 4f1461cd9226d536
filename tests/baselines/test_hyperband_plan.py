"""Hyperband: plans equal the tables of Li et al. (2018); successive halving runs them."""

from __future__ import annotations

import math
from fractions import Fraction as F

import pytest

from baselines import Budget, Hyperband, SearcherError, hyperband_plan
from baselines.hyperband import max_bracket
from stn.space import HParam, Space

SPACE = Space.of(HParam("lr", 1e-4, 1.0, 1e-2, log=True), HParam("layers", 1, 4, 2, integer=True))


def rows(R, eta):
    """(s, n, r, [n_i], [r_i]) per bracket, exact."""
    plan = hyperband_plan(R, eta)
    return [(b.s, b.n, b.r, [n for n, _ in b.rungs], [r for _, r in b.rungs]) for b in plan]


def test_paper_table_R81_eta3():
    # Li et al. 2018, Table 1: (s, n, r) and the rungs (n_i, r_i)
    assert rows(81, 3) == [
        (4, 81, 1, [81, 27, 9, 3, 1], [1, 3, 9, 27, 81]),
        (3, 34, 3, [34, 11, 3, 1], [3, 9, 27, 81]),
        (2, 15, 9, [15, 5, 1], [9, 27, 81]),
        (1, 8, 27, [8, 2], [27, 81]),
        (0, 5, 81, [5], [81]),
    ]


def test_R27_eta3_and_R16_eta2():
    assert rows(27, 3) == [
        (3, 27, 1, [27, 9, 3, 1], [1, 3, 9, 27]),
        (2, 12, 3, [12, 4, 1], [3, 9, 27]),
        (1, 6, 9, [6, 2], [9, 27]),
        (0, 4, 27, [4], [27]),
    ]
    assert rows(16, 2) == [
        (4, 16, 1, [16, 8, 4, 2, 1], [1, 2, 4, 8, 16]),
        (3, 10, 2, [10, 5, 2, 1], [2, 4, 8, 16]),
        (2, 7, 4, [7, 3, 1], [4, 8, 16]),
        (1, 5, 8, [5, 2], [8, 16]),
        (0, 5, 16, [5], [16]),
    ]


def test_R_not_a_power_keeps_exact_fractions():
    # 3**4 = 81 <= 100 < 243: five brackets, r = 100 / 3**s exactly
    assert rows(100, 3) == [
        (4, 81, F(100, 81), [81, 27, 9, 3, 1], [F(100, 81), F(100, 27), F(100, 9), F(100, 3), 100]),
        (3, 34, F(100, 27), [34, 11, 3, 1], [F(100, 27), F(100, 9), F(100, 3), 100]),
        (2, 15, F(100, 9), [15, 5, 1], [F(100, 9), F(100, 3), 100]),
        (1, 8, F(100, 3), [8, 2], [F(100, 3), 100]),
        (0, 5, 100, [5], [100]),
    ]


@pytest.mark.parametrize("R, eta, s_max", [(243, 3, 5), (1000, 10, 3)])
def test_exact_power_where_a_float_log_drops_a_bracket(R, eta, s_max):
    assert int(math.log(R) / math.log(eta)) == s_max - 1  # the float log undercounts
    assert max_bracket(R, eta) == s_max and len(hyperband_plan(R, eta)) == s_max + 1


def test_R243_eta3_table():
    assert rows(243, 3) == [
        (5, 243, 1, [243, 81, 27, 9, 3, 1], [1, 3, 9, 27, 81, 243]),
        (4, 98, 3, [98, 32, 10, 3, 1], [3, 9, 27, 81, 243]),
        (3, 41, 9, [41, 13, 4, 1], [9, 27, 81, 243]),
        (2, 18, 27, [18, 6, 2], [27, 81, 243]),
        (1, 9, 81, [9, 3], [81, 243]),
        (0, 6, 243, [6], [243]),
    ]


def run_bracket_rung(hb, losses):
    """Ask a whole rung, check that the next ask waits, tell `losses` in order."""
    asked = []
    while (s := hb.ask()) is not None:
        asked.append(s)
    assert hb.ask() is None and not hb.done  # the rung waits for its results
    for s, loss in zip(asked, losses):
        hb.tell(s.id, loss, epochs=s.budget)
    return asked


@pytest.mark.parametrize("resume", [True, False])
def test_successive_halving_promotes_the_best(resume):
    hb = Hyperband(SPACE, 0, R=9, eta=3, resume=resume)
    first = run_bracket_rung(hb, [5, 3, math.nan, 8, 1, 7, 2, 9, 6])  # s = 2: 9 trials, 1 epoch
    assert [s.budget for s in first] == [1.0] * 9 and all(s.resume_from is None for s in first)
    second = run_bracket_rung(hb, [4, 2, 6])  # the best 3 (trials 4, 6, 1) get 3 epochs
    assert [s.budget for s in second] == [3.0] * 3
    assert [s.resume_from for s in second] == ([4, 6, 1] if resume else [None] * 3)
    assert [s.params for s in second] == [first[i].params for i in (4, 6, 1)]
    third = run_bracket_rung(hb, [1])
    assert third[0].params == second[1].params and third[0].budget == 9.0
    nxt = hb.ask()  # bracket s = 1: 5 new configurations of 3 epochs
    assert nxt.budget == 3.0 and nxt.resume_from is None
    assert nxt.params not in [s.params for s in first]


def test_whole_plan_order_and_epochs():
    for order, budgets in (("descending", [1.0, 3.0, 9.0]), ("ascending", [9.0, 3.0, 1.0])):
        hb = Hyperband(SPACE, 1, R=9, eta=3, order=order)
        starts = []  # epochs of the first rung of each bracket, in run order
        while not hb.done:
            s = hb.ask()
            hb.tell(s.id, s.params["lr"], epochs=s.budget)
            if s.resume_from is None and s.budget not in starts:
                starts.append(s.budget)
        assert starts == budgets
        assert len(hb.trials) == 9 + 3 + 1 + 5 + 1 + 3 and hb.ask() is None
    plan = {True: Hyperband(SPACE, 0, R=9, eta=3).plan(), False: None}
    plan[False] = Hyperband(SPACE, 0, R=9, eta=3, resume=False).plan()
    assert [b["epochs"] for b in plan[True]] == [9 + 3 * 2 + 6, 5 * 3 + 6, 27]
    assert [b["epochs"] for b in plan[False]] == [9 + 9 + 9, 15 + 9, 27]
    assert plan[True][0]["rungs"][0] == {"n": 9, "r": 1.0, "r_exact": "1"}


def test_trial_budget_cuts_the_plan_and_describe_records_it():
    hb = Hyperband(SPACE, 0, R=100, eta=3, budget=Budget(trials=5))
    asked = [hb.ask() for _ in range(6)]
    assert asked[5] is None and asked[0].budget == pytest.approx(100 / 81)
    d = hb.describe()
    assert d["s_max"] == 4 and d["plan"][0]["r_exact"] == "100/81" and len(d["plan"]) == 5


@pytest.mark.parametrize(
    "options, match",
    [({"eta": 1}, "eta must be an integer >= 2"), ({"R": 0}, "R must be"),
     ({"order": "random"}, "valid: descending, ascending"), ({"R": 9.5}, "R must be")],
)  # fmt: skip
def test_bad_options(options, match):
    with pytest.raises(SearcherError, match=match):
        Hyperband(SPACE, 0, **options)
