"""The searcher conformance suite, shared by the test modules of this folder.

A test function that takes a `conformance_check` argument runs once per check in CHECKS (see
`pytest_generate_tests`); a check is `check(cls, options)` with `cls` a Searcher subclass and
`options` small settings that keep it fast (empty for the defaults). test_searcher_conformance.py
runs them over `baselines.SEARCHERS`; any test module may run them on its own class.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import pytest
from threadpoolctl import threadpool_limits

from baselines import Budget, ReplayError, Searcher, SearcherError, Suggestion, replay
from stn.space import HParam, Space

SPACE = Space.of(
    HParam("lr", 1e-4, 1.0, 1e-2, log=True),
    HParam("dropout", 0.0, 0.8, 0.5),
    HParam("layers", 1, 5, 2, integer=True),
    HParam("wd", 1e-6, 1e-2, 1e-4, log=True, perturb="batch"),
)
OPTIMUM = [0.3, 0.6, 0.5, 0.2]  # in the unit cube


def objective(s: Suggestion) -> float:
    """A smooth bowl in the unit cube; more epochs (a larger budget) help a little."""
    u = SPACE.to_unit(s.params)
    return sum((a - b) ** 2 for a, b in zip(u, OPTIMUM)) + 1.0 / (1.0 + (s.budget or 10.0))


def drive(
    searcher: Searcher,
    tells: int | None = None,
    parallel: int = 2,
    loss: Callable[[Suggestion], float | tuple[float, str]] = objective,
    queue: list[Suggestion] | None = None,
) -> list[Suggestion]:
    """Keep up to `parallel` trials in flight, telling the oldest first, until the searcher is
    done or `tells` results were told; returns the suggestions asked. `loss` returns a value
    or (value, status)."""
    queue, asked, told = list(queue or []), [], 0
    while not searcher.done and (tells is None or told < tells):
        while len(queue) < parallel and (s := searcher.ask()) is not None:
            queue.append(s)
            asked.append(s)
        assert queue, f"{searcher.name} stalls: ask() is None, nothing pending, not done"
        s = queue.pop(0)
        r = loss(s)
        value, status = r if isinstance(r, tuple) else (r, "ok")
        searcher.tell(s.id, value, status=status, epochs=s.budget or 1.0, seconds=0.25)
        told += 1
        assert told < 500, f"{searcher.name} does not end within its budget"
    return asked


def check_suggestions_in_space(cls: type[Searcher], options: dict) -> None:
    s = cls(SPACE, 0, budget=Budget(trials=10), **options)
    asked = drive(s, parallel=3)
    assert asked and [a.id for a in asked] == list(range(len(asked)))
    for a in asked:
        assert SPACE.validate(a.params) == a.params
        assert float(a.params["layers"]).is_integer()
        assert a.budget is None or a.budget > 0
        assert a.resume_from is None or a.resume_from < a.id


def check_deterministic(cls: type[Searcher], options: dict) -> None:
    runs = [cls(SPACE, 3, budget=Budget(trials=9), **options) for _ in range(2)]
    first, second = (drive(r, parallel=2) for r in runs)
    assert first == second
    assert runs[0].best == runs[1].best and runs[0].events == runs[1].events


def check_seed(cls: type[Searcher], options: dict) -> None:
    """A stochastic searcher's suggestions depend on the seed; the others' do not."""
    a, b = (drive(cls(SPACE, seed, budget=Budget(trials=6), **options)) for seed in (0, 1))
    assert (a != b) == cls.stochastic


def check_tell_updates_best(cls: type[Searcher], options: dict) -> None:
    s = cls(SPACE, 0, **options)
    assert s.best is None
    best = None
    for loss in (5.0, 1.0, 10.0, 0.5):
        a = s.ask()
        if a is None:  # a finite plan (fixed) may propose a single trial
            break
        s.tell(a.id, loss)
        if best is None or loss < best[2]:
            best = (a.id, a.params, loss)
        assert s.best == best
    assert s.best is not None


def check_budget_ends(cls: type[Searcher], options: dict) -> None:
    # a searcher with a finite plan may end before the budget: learn its length first
    free = cls(SPACE, 0, **options)
    drive(free, tells=8)  # still running after 8 results: its plan is longer than the budget
    plan = len(free.trials) if free.done else math.inf
    for budget, parallel in ((Budget(trials=7), 3), ({"epochs": 5.0}, 1)):
        s = cls(SPACE, 0, budget=budget, **options)
        drive(s, parallel=parallel)
        assert s.done and s.ask() is None
        if isinstance(budget, Budget):
            assert s.spent["trials"] == len(s.trials) == min(7, plan)
        else:
            assert s.spent["epochs"] >= 5.0 or len(s.trials) == plan


def check_nan_results(cls: type[Searcher], options: dict) -> None:
    def bad(s: Suggestion) -> tuple[float, str]:
        if s.id % 3 == 1:
            return math.nan, "ok"
        if s.id % 4 == 2:  # a failed or diverged status with a number: the worst all the same
            return -1.0, ("failed", "diverged")[s.id // 4 % 2]
        return (math.inf if s.id % 5 == 4 else objective(s)), "ok"

    s = cls(SPACE, 0, budget=Budget(trials=12), **options)
    asked = drive(s, loss=bad, parallel=2)
    finite = [(v, x.id) for x in asked for v, st in [bad(x)] if math.isfinite(v) and st == "ok"]
    if finite:
        loss, i = min(finite)
        assert s.best == (i, s.trials[i].suggestion.params, loss)
    else:
        assert s.best is None
    assert s.done


def check_replay(cls: type[Searcher], options: dict) -> None:
    s = cls(SPACE, 0, budget=Budget(trials=14), **options)
    drive(s, tells=6, parallel=3)  # stops with trials in flight
    events = json.loads(json.dumps(s.events, allow_nan=False))
    r = replay(cls(SPACE, 0, budget=Budget(trials=14), **options), events)
    assert r.events == s.events and r.pending == s.pending
    assert (r.best, r.spent, r.done, r.describe()) == (s.best, s.spent, s.done, s.describe())
    rest = [[x.trials[i].suggestion for i in x.pending] for x in (s, r)]
    assert drive(s, queue=rest[0]) == drive(r, queue=rest[1])
    assert r.events == s.events
    other = cls(SPACE, 0, budget=Budget(trials=14), **options)
    with pytest.raises(ReplayError):
        replay(other, [*events[:1], {"event": "guess", "id": 0}])


def check_options_and_describe(cls: type[Searcher], options: dict) -> None:
    with pytest.raises(SearcherError, match="unknown option.*valid: .*budget"):
        cls(SPACE, 0, no_such_option=1, **options)
    with pytest.raises(SearcherError, match="seed"):
        cls(SPACE, -1, **options)
    s = cls(SPACE, 0, budget={"trials": 4}, **options)
    drive(s)
    d = json.loads(json.dumps(s.describe(), allow_nan=False))
    assert d["searcher"] == cls.name and d["options"]["budget"]["trials"] == 4


CHECKS = [
    check_suggestions_in_space,
    check_deterministic,
    check_seed,
    check_tell_updates_best,
    check_budget_ends,
    check_nan_results,
    check_replay,
    check_options_and_describe,
]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "conformance_check" in metafunc.fixturenames:
        ids = [c.__name__.removeprefix("check_") for c in CHECKS]
        metafunc.parametrize("conformance_check", CHECKS, ids=ids)


@pytest.fixture(autouse=True)
def _one_thread():
    """The GP's matrices are tiny: threads only add overhead, and on a loaded 2-core machine
    OpenMP/OpenBLAS spin-waiting made a BO ask 10-50x slower. Scoped to each test."""
    with threadpool_limits(limits=1):
        yield
