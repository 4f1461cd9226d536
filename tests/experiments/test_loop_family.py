"""The two training loops are one family: STN's (`stn.train`) and the fixed-hyperparameter one
(`experiments.fixed.train_fixed`) share rows, the divergence rule, the result type, the
checkpoint format and `on_resume`."""

from __future__ import annotations

import math

import pytest

from experiments.fixed import FixedConfig, train_fixed
from stn import STNConfig, train
from stn.checkpoint import load
from stn.config import Result

pytestmark = pytest.mark.usefixtures("one_thread")

LOOPS = ["stn", "fixed"]


def run(loop, problem, rows=None, path=None, **kw):
    log = rows.append if rows is not None else None
    if loop == "stn":
        cfg = STNConfig(**{"epochs": 3, **kw.pop("cfg", {})})
        return train(problem, cfg, log=log, checkpoint_path=path, **kw)
    cfg = FixedConfig(**{"epochs": 3, "lr": 0.01, **kw.pop("cfg", {})})
    return train_fixed(problem, None, cfg, log=log, checkpoint_path=path, **kw)


def above_chance(toy_problem, losses):
    """A toy problem with a chance level (log 3 classes) whose validation losses are `losses`."""
    problem = toy_problem()
    problem.chance_loss = lambda: math.log(3)
    seq = iter(losses)
    evaluate = problem.evaluate

    def fake(model, hyper_fn, split):
        out = evaluate(model, hyper_fn, split)
        return {**out, "loss": next(seq)} if split == "val" else out

    problem.evaluate = fake
    return problem


@pytest.mark.parametrize("loop", LOOPS)
def test_rows_and_result_have_one_shape(toy_problem, loop):
    rows = []
    res = run(loop, toy_problem(), rows, cfg={"max_steps": 6})
    assert isinstance(res, Result) and (res.status, res.reason, res.steps) == ("ok", None, 6)
    assert res.epochs == 1.5 and res.spent["epochs"] == 1.5  # fractional: 6 steps of 4 an epoch
    evals = [r for r in rows if r["kind"] == "eval"]
    assert [(r["step"], r["epoch"]) for r in evals] == [(4, 1.0), (6, 1.5)]
    assert [r["row"] for r in rows] == list(range(len(rows)))
    keys = {"row", "kind", "step", "epoch", "wall_s", "hparams", "val_loss", "val_metric",
            "test_loss", "test_metric", "lr"}  # fmt: skip
    assert all(set(r) - {"sigmas"} == keys for r in evals), evals[0]
    assert set(evals[0]["hparams"]) == {"dropout", "noise"}


@pytest.mark.parametrize("loop", LOOPS)
def test_validation_loss_above_chance_for_three_evaluations_is_divergence(toy_problem, loop):
    problem = above_chance(toy_problem, [0.9, 2.0, 1.5, 5.0, 9.0, 9.0])
    res = run(loop, problem, cfg={"epochs": 6})
    assert (res.status, res.steps) == ("diverged", 16)  # evaluations 2, 3 and 4 above log 3
    assert (
        res.reason
        == "validation loss above chance (1.099) for 3 evaluations in a row, 5 at step 16"
    )
    assert res.val_loss == 0.9  # the best evaluation before it diverged
    for off in ({"diverge_after": 0}, {"diverge_after": 4}):  # off, or more patient
        problem = above_chance(toy_problem, [0.9, 2.0, 1.5, 5.0, 0.5, 9.0])
        assert run(loop, problem, cfg={"epochs": 6, **off}).status == "ok"
    problem = above_chance(toy_problem, [0.9, 2.0, 1.5, 5.0, 9.0, 9.0])
    del problem.chance_loss  # no chance level: only non-finite losses count
    assert run(loop, problem, cfg={"epochs": 6}).status == "ok"


@pytest.mark.parametrize("loop", LOOPS)
def test_a_non_finite_loss_is_divergence_with_its_reason(toy_problem, loop):
    problem = toy_problem()
    loss = problem.train_loss
    problem.train_loss = lambda m, b, hb: loss(m, b, hb) * (math.nan if problem.calls > 5 else 1)
    res = run(loop, problem)
    assert res.status == "diverged" and res.reason == "non-finite training loss (nan) at step 6"
    problem = above_chance(toy_problem, [0.9, math.inf])
    res = run(loop, problem)
    assert (res.status, res.reason) == ("diverged", "non-finite validation loss (inf) at step 8")


@pytest.mark.parametrize("loop", LOOPS)
def test_checkpoint_format_and_on_resume(toy_problem, loop, tmp_path):
    path, rows, kept = tmp_path / "c.pt", [], []
    cut = run(loop, toy_problem(), rows, path, stop_after_steps=6, on_resume=kept.append)
    assert cut.status == "interrupted" and kept == [0]  # a fresh start keeps no row
    state = load(path, loop)
    assert {"format", "loop", "config", "model", "optimizers", "plateau", "divergence",
            "counters", "problem", "rng"} <= set(state)  # fmt: skip
    assert state["counters"]["rows"] == len(rows) and state["counters"]["step"] == 6
    assert load(path, "stn" if loop == "fixed" else "fixed") is None  # the other loop's: unusable


@pytest.mark.parametrize("loop", LOOPS)
def test_a_checkpoint_of_other_settings_is_refused_and_left_as_it_was(toy_problem, loop, tmp_path):
    from stn.config import ConfigError

    path = tmp_path / "c.pt"
    run(loop, toy_problem(), path=path, stop_after_steps=6, cfg={"lr": 0.01})
    before = path.read_bytes()
    with pytest.raises(ConfigError, match=r"other settings: lr; use the same config"):
        run(loop, toy_problem(), path=path, cfg={"lr": 0.02})
    assert path.read_bytes() == before
    # the budget and the device may change on resume: the cut run goes on to its new end
    res = run(loop, toy_problem(), path=path, cfg={"lr": 0.01, "epochs": 4})
    assert res.status == "ok" and res.steps == 16
