"""Resume: an interrupted and resumed run ends bit-identical to an uninterrupted one (CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stn import STNConfig, train
from stn.checkpoint import load
from stn.loop import ConfigError

# 4 training batches per epoch; warm-up 2 steps, then cycles of 2 weight steps + 1 hyper step:
# step 5 is mid-epoch and mid-cycle, step 8 ends an epoch (its evaluation still to come).
CONFIGS = {
    "stn": STNConfig(epochs=3, warmup_steps=2, hyper_lr=0.03, lr_decay=0.5, decay_window=1),
    "delta": STNConfig.delta_stn(epochs=3, warmup_steps=2, train_steps=2, linearize=False),
    "delta-linearized": STNConfig.delta_stn(epochs=3, warmup_steps=2, train_steps=2),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def assert_same(a, b, path="state"):
    """Bitwise equality of nested checkpoint states (wall-clock time left out)."""
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            if k != "wall_s":
                assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), path
    else:
        assert a == b or (a != a and b != b), path  # NaN equals NaN here


def rows_without_time(rows):
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


def reference(toy_problem, cfg, tmp_path):
    rows = []
    result = train(toy_problem(), cfg, log=rows.append, checkpoint_path=tmp_path / "ref.pt")
    return result, rows, load(tmp_path / "ref.pt")


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("stops", [(5,), (8,), (3, 7, 10)])
def test_interrupted_equals_uninterrupted(toy_problem, tmp_path, name, stops):
    cfg = CONFIGS[name]
    ref, ref_rows, ref_state = reference(toy_problem, cfg, tmp_path)
    path, rows = tmp_path / "cut.pt", []
    for k in stops:
        cut = train(toy_problem(), cfg, log=rows.append, checkpoint_path=path, stop_after_steps=k)
        assert cut.status == "interrupted" and cut.steps == k
    result = train(toy_problem(), cfg, log=rows.append, checkpoint_path=path)
    assert_same(load(path), ref_state)  # weights, hyper, optimisers, RNG, counters, best
    assert rows_without_time(rows) == rows_without_time(ref_rows)
    assert result.status == ref.status == "ok"
    assert (result.val_loss, result.hparams, result.final_scales) == (
        ref.val_loss,
        ref.hparams,
        ref.final_scales,
    )
    for p, q in zip(result.model.parameters(), ref.model.parameters()):
        assert torch.equal(p, q)


def test_crash_after_periodic_checkpoint(toy_problem, tmp_path):
    """A run killed between checkpoints resumes from the last one and relogs from its row."""
    cfg = STNConfig(epochs=3, warmup_steps=2, checkpoint_every_steps=3)
    _, ref_rows, ref_state = reference(toy_problem, cfg, tmp_path)
    path, rows = tmp_path / "crash.pt", []

    def crash_at_step_8(row):
        if row["step"] == 8 and row["kind"] == "eval":
            raise KeyboardInterrupt  # as a kill would, mid-epoch-end, after the step-6 save
        rows.append(row)

    with pytest.raises(KeyboardInterrupt):
        train(toy_problem(), cfg, log=crash_at_step_8, checkpoint_path=path)
    assert load(path)["counters"]["step"] == 6
    resumed = []
    train(toy_problem(), cfg, log=resumed.append, checkpoint_path=path)
    first = resumed[0]["row"]  # what a run store truncates to on resume
    rows = [r for r in rows if r["row"] < first] + resumed
    assert rows_without_time(rows) == rows_without_time(ref_rows)
    assert_same(load(path), ref_state)


def test_finished_run_returns_its_result_without_training(toy_problem, tmp_path):
    cfg = STNConfig(epochs=2)
    ref, _, _ = reference(toy_problem, cfg, tmp_path)
    problem = toy_problem()
    problem.train_loss = problem.val_loss = lambda *args: pytest.fail("trained again")
    again = train(problem, cfg, checkpoint_path=tmp_path / "ref.pt")
    untimed = lambda r: r.as_record() | {"wall_s": 0, "spent": r.spent["epochs"]}  # noqa: E731
    assert untimed(again) == untimed(ref)


def test_resume_with_other_settings_fails(toy_problem, tmp_path):
    path = tmp_path / "c.pt"
    train(toy_problem(), STNConfig(epochs=2), checkpoint_path=path, stop_after_steps=3)
    with pytest.raises(ConfigError, match="hyper_lr"):
        train(toy_problem(), STNConfig(epochs=2, hyper_lr=0.1), checkpoint_path=path)
    longer = train(toy_problem(), STNConfig(epochs=3), checkpoint_path=path)  # epochs may grow
    assert longer.status == "ok" and longer.steps == 12
