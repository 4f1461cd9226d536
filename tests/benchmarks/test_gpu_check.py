"""benchmarks/gpu_check.py on CPU: the pieces gpu_check.sh runs on a GPU, at small sizes."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import gpu_check

pytestmark = pytest.mark.usefixtures("one_thread")


def test_data_and_one_timed_stn_epoch_of_each_paper_task(tmp_path, capsys):
    assert gpu_check.main(["data", str(tmp_path)]) == 0
    dirs = {"cifar10": tmp_path / "cifar10", "ptb": tmp_path / "ptb"}
    small = {
        "cifar10": dict(width=1 / 16, data_limit=32, batch=16),
        "ptb": dict(emb=8, hidden=8, batch=4, bptt=10, eval_batch=2),
    }
    for name, sizes in small.items():
        out = gpu_check.time_epoch(name, str(dirs[name]), "cpu", **sizes)
        assert out["status"] == "ok" and math.isfinite(out["val_loss"]), out
        assert out["steps"] >= 2 and out["hyper_steps"] == out["steps"] // 2  # STN cycles
        assert out["val_eval_s"] >= 0 and out["test_eval_s"] >= 0 and out["data"]


def test_verify_names_every_failed_or_non_finite_run(tmp_path, capsys):
    runs = tmp_path / "runs"
    for name, rec in {
        "a/stn/seed0": {"status": "ok", "val_loss": 1.0, "test_loss": 1.1},
        "a/grid/seed0/trial0": {"status": "failed", "val_loss": None, "test_loss": None},
        "b/stn/seed0": {"status": "ok", "val_loss": math.nan, "test_loss": 1.0},
    }.items():
        (runs / name).mkdir(parents=True)
        (runs / name / "result.json").write_text(json.dumps(rec))
    assert gpu_check.verify(runs) == ["a/grid/seed0/trial0", "b/stn/seed0"]
    assert gpu_check.main(["verify", str(runs)]) == 1
    assert gpu_check.verify(tmp_path / "empty") == [f"no result.json under {tmp_path / 'empty'}"]
