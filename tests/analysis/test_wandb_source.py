"""The W&B source gives the local source's rows for the same runs: from the offline run files
the smoke runs wrote, and from a recorded public-API response read through a fake `wandb.Api`."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import wandb

from analysis.load import StoreError, load_local, load_metrics
from analysis.report import main
from analysis.wandb_source import (
    RunLike,
    load_wandb,
    offline_runs,
    read_offline_run,
    read_records,
    to_frames,
)


def assert_same_rows(a, b) -> None:
    """Two `Loaded` tables hold the same rows (the runs' `path` says where each came from)."""
    pd.testing.assert_frame_equal(a.runs.drop(columns="path"), b.runs.drop(columns="path"))
    pd.testing.assert_frame_equal(a.metrics, b.metrics)
    assert a.spec == b.spec and a.spec["name"] == "digits-mlp"


def test_offline_runs_give_the_local_rows(smoke):
    local = load_local(smoke.runs, smoke.experiment)
    offline = load_wandb(smoke.experiment, wandb_dir=smoke.runs)
    assert len(offline.runs) == len(local.runs) == 2 * (1 + 2 + 1)  # stn, 2 random trials, fixed
    assert set(offline.runs["status"]) == {"ok"}
    assert offline.runs["hparams.weight_decay"].notna().all()
    assert offline.space == local.space and local.space["weight_decay"]["log"]
    assert {"hyper", "eval"} <= set(offline.metrics["kind"])  # the STN's rows
    assert_same_rows(offline, local)
    every = load_wandb(smoke.experiment, wandb_dir=smoke.runs, all_histories=True)
    pd.testing.assert_frame_equal(every.metrics, load_metrics(local.runs))


def test_report_from_offline_runs_equals_the_local_report(smoke, report, tmp_path):
    out = tmp_path / "wandb-report"
    args = ["report", smoke.experiment, "--source", "wandb", "--wandb-dir", str(smoke.runs)]
    assert main([*args, "--out", str(out)]) == 0
    for name in ("table.md", "table.tex", "table.csv"):
        assert (out / name).read_text() == (report / name).read_text(), name


# --- a recorded API response ---------------------------------------------------------------


def api_shape(run: RunLike) -> dict:
    """One run as the public API returns it: id, state, config (values unwrapped), summary
    metrics (nested dicts), and the rows scan_history yields (with W&B's _step, _runtime...)."""
    return {"id": Path(run.id).stem[4:], "state": run.state, "config": run.config,
            "summary_metrics": run.summary, "history": run.history}  # fmt: skip


class FakeRun:
    def __init__(self, rec: dict):
        self.id, self.state, self.config = rec["id"], rec["state"], rec["config"]
        self.summary_metrics, self._rows = rec["summary_metrics"], rec["history"]

    def scan_history(self, keys=None, page_size=1000):
        yield from (dict(r) for r in self._rows)

    def history(self, *args, **kwargs):
        raise AssertionError("history() samples 500 points: the reader must use scan_history()")


class FakeApi:
    """`wandb.Api` answering from a recorded response file; it records the queries it gets."""

    response: Path | None = None  # set by the recorded_api fixture
    queries: list = []

    def __init__(self, *args, **kwargs):
        self.recorded = json.loads(self.response.read_text())

    def runs(self, path, filters=None, **kwargs):
        FakeApi.queries.append((path, filters))
        return [FakeRun(r) for r in self.recorded[path]]


@pytest.fixture
def recorded_api(smoke, tmp_path, monkeypatch):
    """wandb.Api replaced by FakeApi over a response recorded from the smoke runs' files."""
    response = tmp_path / "api-response.json"
    runs = [api_shape(r) for r in offline_runs(smoke.runs)]
    response.write_text(json.dumps({"my-team/digits-mlp": runs}))
    monkeypatch.setattr(FakeApi, "response", response)
    monkeypatch.setattr(FakeApi, "queries", [])
    monkeypatch.setattr(wandb, "Api", FakeApi)
    return FakeApi


def test_recorded_api_response_gives_the_local_rows(smoke, recorded_api):
    online = load_wandb(smoke.experiment, path="my-team/digits-mlp")
    assert recorded_api.queries == [("my-team/digits-mlp", {"config.experiment.name":
                                                            "digits-mlp"})]  # fmt: skip
    assert all(p.startswith("wandb:my-team/digits-mlp/") for p in online.runs["path"])
    assert_same_rows(online, load_local(smoke.runs, smoke.experiment))


def test_api_runs_of_other_experiments_are_left_out(smoke, recorded_api):
    recorded = json.loads(recorded_api.response.read_text())
    stranger = json.loads(json.dumps(recorded["my-team/digits-mlp"][0]))
    stranger["config"]["experiment"]["name"] = "cifar10-alexnet"
    recorded["my-team/digits-mlp"].append(stranger)
    recorded_api.response.write_text(json.dumps(recorded))
    online = load_wandb(smoke.experiment, path="my-team/digits-mlp")
    assert len(online.runs) == len(load_local(smoke.runs, smoke.experiment).runs)
    with pytest.raises(StoreError, match="no W&B runs of 'ptb-lstm'"):
        load_wandb("ptb-lstm", path="my-team/digits-mlp")


# --- the conversion on its own ------------------------------------------------------------


def test_resumed_run_keeps_the_rows_after_its_checkpoint(smoke):
    """A run resumed from a checkpoint re-logs from there: as in the store, the rows of the
    first attempt after the checkpoint are dropped (their steps logged again)."""
    stn = next(r for r in offline_runs(smoke.runs) if r.config["method"] == "stn")
    rows = stn.history
    cut = len(rows) // 2
    resumed = RunLike(stn.id, stn.config, stn.summary, rows[: cut + 2] + rows[cut:], stn.state)
    a, b = to_frames([stn], smoke.experiment), to_frames([resumed], smoke.experiment)
    pd.testing.assert_frame_equal(a.metrics, b.metrics)


def test_run_without_a_result_is_running_or_failed(smoke):
    stn = next(r for r in offline_runs(smoke.runs) if r.config["method"] == "stn")
    summary = {k: v for k, v in stn.summary.items() if k != "status"}
    for state, status in [("running", "running"), ("crashed", "failed"), ("failed", "failed")]:
        run = RunLike(stn.id, stn.config, summary, stn.history, state)
        assert to_frames([run], smoke.experiment).runs["status"].tolist() == [status]


def test_read_records_stops_at_a_torn_tail_and_refuses_other_files(smoke, tmp_path):
    path = next(smoke.runs.rglob("run-*.wandb"))
    whole = list(read_records(path))
    assert whole[-1].WhichOneof("record_type") == "exit"
    torn = tmp_path / "offline-run-x" / path.name
    torn.parent.mkdir()
    torn.write_bytes(path.read_bytes()[: path.stat().st_size - 50])
    part = list(read_records(torn))
    assert 0 < len(part) < len(whole)
    assert read_offline_run(torn).state == "running"  # no exit record: still running
    (tmp_path / "not.wandb").write_bytes(b"PK\x03\x04")
    with pytest.raises(StoreError, match="not a W&B run file"):
        list(read_records(tmp_path / "not.wandb"))
