"""The fixed-hyperparameter loop: budgets, resume, promotion, divergence, per-step values."""

from __future__ import annotations

import math

import pytest
import torch

from experiments.fixed import FixedConfig, train_fixed, values_at
from experiments.tasks import DigitsTask
from stn import checkpoint as ckpt

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest


def run(problem, path=None, rows=None, **kw):
    cfg = FixedConfig(**{"epochs": 2, "lr": 0.1, "momentum": 0.9, **kw.pop("cfg", {})})
    log = rows.append if rows is not None else None
    return train_fixed(problem, kw.pop("params", None), cfg, log=log, checkpoint_path=path, **kw)


def evals(rows):
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows if r["kind"] == "eval"]


def test_budget_in_epochs_fractional_and_steps(toy_problem):
    rows = []
    res = run(toy_problem(), rows=rows, cfg={"epochs": 1.5})  # 4 batches an epoch
    assert (res.status, res.steps, res.epochs) == ("ok", 6, 1.5)
    assert [r["step"] for r in evals(rows)] == [4, 6]  # each epoch end, and the budget's end
    assert res.val_loss == min(r["val_loss"] for r in evals(rows))
    assert run(toy_problem(), cfg={"epochs": None, "max_steps": 3}).steps == 3
    assert run(toy_problem(), cfg={"epochs": 5, "max_steps": 3}).steps == 3


def test_interrupted_run_resumes_bit_identical(toy_problem, tmp_path):
    full_rows, cut_rows = [], []
    full = run(toy_problem(), tmp_path / "a.pt", full_rows, cfg={"epochs": 3})
    cut = run(toy_problem(), tmp_path / "b.pt", cut_rows, cfg={"epochs": 3}, stop_after_steps=5)
    assert cut.status == "interrupted" and cut.steps == 5
    kept = []
    done = run(toy_problem(), tmp_path / "b.pt", cut_rows, cfg={"epochs": 3}, on_resume=kept.append)
    assert kept == [1]  # the rows its checkpoint had logged: step 4's evaluation
    assert done.status == "ok" and done.val_loss == full.val_loss
    assert evals(cut_rows) == evals(full_rows)
    a, b = ckpt.load(tmp_path / "a.pt")["model"], ckpt.load(tmp_path / "b.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a finished run found again just returns its result: no step trained, no row logged
    again_rows: list = []
    again = run(toy_problem(), tmp_path / "a.pt", rows=again_rows, cfg={"epochs": 3})
    assert again.val_loss == full.val_loss and again.steps == full.steps
    assert again_rows == []


def test_promotion_continues_another_runs_checkpoint(toy_problem, tmp_path):
    straight = run(toy_problem(), cfg={"epochs": 3})
    run(toy_problem(), tmp_path / "rung0.pt", cfg={"epochs": 1})
    promoted = run(toy_problem(), tmp_path / "rung1.pt", cfg={"epochs": 3},
                   resume_from=tmp_path / "rung0.pt")  # fmt: skip
    assert promoted.steps == 12 and promoted.val_loss == straight.val_loss
    assert promoted.epochs == 3.0 and promoted.spent["epochs"] == 2.0  # its own share only
    assert 0 < promoted.spent["seconds"] < promoted.wall_s
    # a parent's checkpoint that is gone: trained from scratch, all of it its own
    alone = run(toy_problem(), tmp_path / "x.pt", cfg={"epochs": 3},
                resume_from=tmp_path / "missing.pt")  # fmt: skip
    assert alone.val_loss == straight.val_loss and alone.spent["epochs"] == 3.0


def test_a_diverging_run_ends_diverged(toy_problem, tmp_path):
    res = run(toy_problem(), tmp_path / "c.pt", cfg={"lr": 1e6, "epochs": 5})
    assert res.status == "diverged" and res.reason.startswith("non-finite") and res.steps < 20
    assert (tmp_path / "c.pt").exists()


def train_values(rows):
    return [(r["step"], r["hparams"]["dropout"]) for r in rows if r["kind"] == "train"]


def test_noise_variant_draws_per_minibatch_and_repeats(toy_problem):
    first, second = [], []
    run(toy_problem(), rows=first, noise_std={"dropout": 0.05})
    run(toy_problem(), rows=second, noise_std={"dropout": 0.05})
    values = [v for _, v in train_values(first)]
    assert len(values) == 8 and len(set(values)) == 8
    assert all(0.0 <= v <= 0.9 for v in values)
    assert abs(sum(values) / 8 - 0.2) < 0.06
    assert train_values(first) == train_values(second)  # seeded: the same draws again


def test_sinusoid_and_schedule_variants_log_their_values(toy_problem):
    rows = []
    run(toy_problem(), rows=rows, sinusoid={"dropout": (0.1, 4.0)})
    steps, values = zip(*train_values(rows))  # step s used the value of step index s - 1
    assert steps == tuple(range(1, 9))
    assert values == pytest.approx([0.2 + 0.1 * math.sin(2 * math.pi * i / 4) for i in range(8)])
    rows = []
    run(toy_problem(), rows=rows, schedule=[(0, {"dropout": 0.1}), (3, {"dropout": 0.5})])
    assert [v for _, v in train_values(rows)] == [0.1] * 3 + [0.5] * 5
    assert evals(rows)[0]["hparams"] == {"dropout": 0.2, "noise": 0.1}  # evaluated at the base


def test_values_are_clipped_into_range_and_names_checked(toy_problem):
    space = toy_problem().space
    base = space.init()
    assert values_at(0, space, base, schedule=[(0, {"dropout": 5.0})])["dropout"] == 0.9
    with pytest.raises(ValueError, match="unknown hyperparameters"):
        run(toy_problem(), noise_std={"nope": 0.1})
    with pytest.raises(ValueError, match="dropout"):
        run(toy_problem(), params={"dropout": 2.0, "noise": 0.1})


def test_config_from_task_and_a_real_task(tmp_path):
    task = DigitsTask(hidden=8, epochs=1, lr=0.1)
    cfg = FixedConfig.from_task(task, seed=3)
    assert (cfg.epochs, cfg.lr, cfg.momentum, cfg.seed) == (1, 0.1, 0.9, 3)
    with pytest.raises(ValueError, match="valid"):
        FixedConfig.from_task(task, epoch=2)
    with pytest.raises(ValueError, match="optimizer"):
        FixedConfig(optimizer="lbfgs")
    res = train_fixed(task.build(0), None, cfg, checkpoint_path=tmp_path / "d.pt")
    assert res.status == "ok" and res.metric_name == "accuracy"
    assert 0 < res.val_loss < 2.4 and 0 <= res.test_metric <= 1
