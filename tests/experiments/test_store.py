import json
import math

import pytest

from experiments.store import RESULT_KEYS, RunDir, atomic_write_json, run_path


def result(**kw):
    base = dict(
        status="ok",
        val_loss=0.5,
        test_loss=0.6,
        val_metric=0.9,
        test_metric=0.88,
        metric_name="accuracy",
        epochs=3,
        wall_s=1.5,
        hparams={"drop": 0.1},
    )
    return {**base, **kw}


def test_layout_and_records(tmp_path):
    rd = RunDir(run_path(tmp_path, "digits-mlp", "random", 2, trial=7))
    assert rd.path == tmp_path / "digits-mlp" / "random" / "seed2" / "trial7"
    assert not rd.done and rd.read_result() is None
    rd.write_spec({"experiment": "digits-mlp", "seed": 2})
    spec = rd.read_spec()
    assert spec["seed"] == 2 and {"commit", "dirty"} <= set(spec["git"]) and "host" in spec
    rd.log({"step": 1, "loss": 2.0})
    rd.log({"step": 2, "loss": float("nan")})  # JSON has no NaN: stored as null
    rd.write_result(result(val_loss=math.inf))
    assert rd.done
    assert [r["loss"] for r in rd.metrics()] == [2.0, None]
    assert rd.read_result()["val_loss"] is None
    assert set(RESULT_KEYS) <= set(rd.read_result())
    # no temporary files are left behind
    assert sorted(p.name for p in rd.path.iterdir()) == [
        "metrics.jsonl",
        "result.json",
        "spec.json",
    ]


def test_result_is_checked_before_writing(tmp_path):
    rd = RunDir(tmp_path / "r")
    with pytest.raises(ValueError, match="missing keys: test_loss"):
        rd.write_result({k: v for k, v in result().items() if k != "test_loss"})
    with pytest.raises(ValueError, match="unknown status 'great'"):
        rd.write_result(result(status="great"))
    assert not rd.done


def test_cut_lines_are_skipped_and_resume_truncates(tmp_path):
    rd = RunDir(tmp_path / "r")
    for s in range(1, 6):
        rd.log({"step": s})
    with open(rd.metrics_file, "a") as f:
        f.write('{"step": 6, "lo')  # a crash in the middle of a line
    assert [r["step"] for r in rd.metrics()] == [1, 2, 3, 4, 5]
    rd.truncate_metrics(3)
    assert [r["step"] for r in rd.metrics()] == [1, 2, 3]


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    p = tmp_path / "x.json"
    atomic_write_json(p, {"a": 1})
    with pytest.raises(TypeError):
        atomic_write_json(p, {"a": object()})
    assert json.loads(p.read_text()) == {"a": 1}
    assert [q.name for q in tmp_path.iterdir()] == ["x.json"]
