"""PBT's bookkeeping: the generation plan, truncation selection (who continues, who copies
whom), explore inside the space, option errors, and a generation going out in one submission."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from baselines import PBT, Budget, SearcherError, replay
from baselines.pbt import FACTORS, perturb
from stn.space import HParam, Space

from .conftest import check_replay

SPACE = Space.of(
    HParam("lr", 1e-4, 1.0, 1e-2, log=True),
    HParam("dropout", 0.0, 0.8, 0.5),
    HParam("layers", 1, 5, 2, integer=True),
    HParam("wd", 1e-6, 1e-2, 1e-4, log=True),
)


def generation(pbt: PBT) -> list:
    """Ask until the searcher waits: one generation's suggestions."""
    out = []
    while (s := pbt.ask()) is not None:
        out.append(s)
    return out


def tell_all(pbt: PBT, asked: list, losses: list[float], statuses=None) -> None:
    for k, (s, loss) in enumerate(zip(asked, losses)):
        status = statuses[k] if statuses else "ok"
        pbt.tell(s.id, loss, status=status, epochs=1.0)


def test_a_generation_is_proposed_whole_and_budgets_are_cumulative():
    pbt = PBT(SPACE, 0, population=4, epochs=5, interval=2)
    assert pbt.ends == [2, 4, 5] and pbt.describe()["plan"]["epochs"] == 20.0
    gen0 = generation(pbt)
    assert [s.id for s in gen0] == [0, 1, 2, 3] and pbt.ask() is None  # waits for results
    assert {s.budget for s in gen0} == {2.0} and {s.resume_from for s in gen0} == {None}
    tell_all(pbt, gen0[:3], [0.1, 0.2, 0.3])
    assert pbt.ask() is None  # one member still out: the next generation waits for it
    tell_all(pbt, gen0[3:], [0.4])
    gen1 = generation(pbt)
    assert len(gen1) == 4 and {s.budget for s in gen1} == {4.0}
    tell_all(pbt, gen1, [0.1, 0.2, 0.3, 0.4])
    gen2 = generation(pbt)
    assert {s.budget for s in gen2} == {5.0}  # the last interval is cut to `epochs`
    tell_all(pbt, gen2, [0.1, 0.2, 0.3, 0.4])
    assert pbt.done and pbt.ask() is None
    assert pbt.describe()["members"] == [[0, 4, 8], [1, 5, 9], [2, 6, 10], [3, 7, 11]]
    # exact decimals: 0.1 x 3 is 0.3 and 0.7 / 0.1 is seven generations
    assert PBT(SPACE, 0, epochs=0.7, interval=0.1).ends[2] == Fraction(3, 10)
    assert len(PBT(SPACE, 0, epochs=0.7, interval=0.1).ends) == 7


def test_truncation_bottom_copies_top_and_explores_the_rest_continue():
    pbt = PBT(SPACE, 1, population=8, fraction=0.25, epochs=4, interval=2)
    gen0 = generation(pbt)
    # members 5 and 2 are best; 0 and 6 worst (ranked by loss, ties to the lower member)
    losses = [0.9, 0.5, 0.2, 0.6, 0.7, 0.1, 0.95, 0.5]
    tell_all(pbt, gen0, losses)
    gen1 = generation(pbt)
    top = {gen0[5].id, gen0[2].id}
    for m, s in enumerate(gen1):
        parent = pbt.trials[s.resume_from].suggestion
        if m in (0, 6):  # bottom quarter: continues a top member's checkpoint, perturbed
            assert s.resume_from in top
            for p in SPACE:
                old, new = parent.params[p.name], s.params[p.name]
                assert new in {perturb(p, old, f) for f in FACTORS}, (p.name, old, new)
            assert s.params != parent.params
        else:  # the others continue their own trial with their own hyperparameters
            assert s.resume_from == gen0[m].id and s.params == gen0[m].params


def test_failed_and_diverged_members_always_copy_and_a_dead_population_ends():
    pbt = PBT(SPACE, 0, population=4, fraction=0.25, epochs=6, interval=2)
    gen0 = generation(pbt)
    tell_all(pbt, gen0, [0.3, math.nan, 0.1, 0.2], ["ok", "ok", "failed", "diverged"])
    gen1 = generation(pbt)
    # only member 0 finished ok with a finite loss: every other member copies it
    assert [s.resume_from for s in gen1] == [gen0[0].id] * 4
    assert gen1[0].params == gen0[0].params
    tell_all(pbt, gen1, [1.0] * 4, ["failed"] * 4)
    assert pbt.done and pbt.ask() is None and len(pbt.trials) == 8


@pytest.mark.parametrize("explore", ["perturb", "resample"])
def test_explore_stays_in_range_over_many_seeds(explore):
    space = Space.of(*SPACE, HParam("noise", 0.0, 0.5, 0.1), HParam("k", 0, 3, 0, integer=True))
    moved = {p.name: 0 for p in space}
    for seed in range(200):
        pbt = PBT(space, seed, population=2, fraction=0.5, epochs=3, interval=1, explore=explore)
        for _ in range(3):
            asked = generation(pbt)
            for s in asked:
                assert space.validate(s.params) == s.params  # in range, integers integral
            tell_all(pbt, asked, [0.2, 0.1])  # member 0 copies member 1 each generation
            if asked[0].resume_from is not None:
                src = pbt.trials[asked[0].resume_from].suggestion.params
                for p in space:
                    moved[p.name] += asked[0].params[p.name] != src[p.name]
    assert all(n > 0 for n in moved.values()), moved  # every hyperparameter explores


def test_perturb_is_a_factor_in_the_hyperparameters_own_scale_clipped():
    lr, drop, layers = SPACE["lr"], SPACE["dropout"], SPACE["layers"]
    rng = np.random.default_rng(0)
    for v in np.exp(rng.uniform(math.log(1e-4), 0.0, 500)):
        for f in FACTORS:
            new = perturb(lr, float(v), f)
            # a constant step on the log axis, unless clipped at the range's ends
            assert new == pytest.approx(min(max(v * f, 1e-4), 1.0))
            assert 1e-4 <= new <= 1.0
    assert perturb(drop, 0.5, 1.2) == pytest.approx(0.6) and perturb(drop, 0.75, 1.2) == 0.8
    # integers move by at least one (2 x 1.2 rounds back to 2), clipped to low..high
    assert [perturb(layers, v, 1.2) for v in (1.0, 2.0, 4.0, 5.0)] == [2.0, 3.0, 5.0, 5.0]
    assert [perturb(layers, v, 0.8) for v in (1.0, 2.0, 5.0)] == [1.0, 1.0, 4.0]


def test_start_at_the_spaces_initial_values():
    pbt = PBT(SPACE, 0, population=4, start="init")
    gen0 = generation(pbt)
    assert gen0[0].params == SPACE.init()
    for s in gen0[1:]:
        for p in SPACE:
            assert s.params[p.name] in {perturb(p, p.init, f) for f in FACTORS}


def test_replay_restores_a_population_mid_generation():
    pbt = PBT(SPACE, 3, population=4, epochs=6, interval=2)
    gen0 = generation(pbt)
    tell_all(pbt, gen0, [0.4, 0.3, 0.2, 0.1])
    gen1 = generation(pbt)
    tell_all(pbt, gen1[:2], [0.5, 0.6])
    again = replay(PBT(SPACE, 3, population=4, epochs=6, interval=2), pbt.events)
    assert again.pending == pbt.pending == [gen1[2].id, gen1[3].id]
    assert again.describe() == pbt.describe()
    check_replay(PBT, {"population": 3, "epochs": 8, "interval": 2})


@pytest.mark.parametrize(
    "options, message",
    [
        ({"population": 1}, "pbt: population must be an integer >= 2, got 1"),
        ({"population": 2.5}, "pbt: population must be an integer >= 2, got 2.5"),
        ({"epochs": 0}, "pbt: epochs must be a number > 0, got 0"),
        ({"epochs": math.inf}, "pbt: epochs must be a number > 0, got inf"),
        ({"interval": "2"}, "pbt: interval must be a number > 0, got '2'"),
        ({"interval": True}, "pbt: interval must be a number > 0, got True"),
        ({"fraction": 0.0}, "pbt: fraction must be a number > 0 and <= 0.5, got 0.0"),
        ({"fraction": 0.6}, "pbt: fraction must be a number > 0 and <= 0.5, got 0.6"),
        ({"explore": "mutate"}, "pbt: unknown explore 'mutate'; valid: perturb, resample"),
        ({"resample_probability": 1.5}, "resample_probability must be a number >= 0 and <= 1"),
        ({"start": "zero"}, "pbt: unknown start 'zero'; valid: prior, init"),
    ],
)
def test_option_errors_are_one_line(options, message):
    with pytest.raises(SearcherError) as err:
        PBT(SPACE, 0, **options)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_half_bounded_space_is_refused():
    with pytest.raises(ValueError, match="half-bounded"):
        PBT(Space.of(HParam("ar", 0.0, math.inf, 1.0)), 0)


def test_the_epoch_budget_ends_it_mid_plan():
    pbt = PBT(SPACE, 0, population=2, epochs=10, interval=1, budget=Budget(epochs=3))
    for _ in range(2):
        tell_all(pbt, generation(pbt), [0.2, 0.1])
    assert pbt.done and pbt.spent["epochs"] == 4.0


@pytest.mark.parametrize("in_flight", [1, 2, 3])
def test_every_parent_checkpoint_is_kept_until_its_child_is_asked(in_flight):
    """Driven as the driver drives it (at most `in_flight` trials asked and not told, a
    checkpoint deleted as soon as checkpoints_needed() leaves it out): a trial is never asked
    to continue a checkpoint already deleted, even when a bottom member copies a top member
    that has already moved on to the next generation."""
    pbt = PBT(SPACE, 3, population=6, epochs=10, interval=1, fraction=0.34)
    rng = np.random.default_rng(0)
    told, deleted, queue = set(), set(), []
    while not pbt.done:
        while len(queue) < in_flight and (s := pbt.ask()) is not None:
            assert s.resume_from is None or s.resume_from not in deleted, s
            queue.append(s)
        if not queue:
            break
        s = queue.pop(0)
        pbt.tell(s.id, float(rng.random()), epochs=1.0)
        told.add(s.id)
        deleted |= told - pbt.checkpoints_needed()
    assert len(pbt.trials) == 60 and any(s.suggestion.resume_from for s in pbt.trials.values())
