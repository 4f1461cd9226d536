"""The run store: layout, records, the one read policy, journals, locks, selection and budget."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import subprocess
import sys
import time

import pytest

from experiments.store import (
    RESULT_KEYS,
    SUMMARY_FORMAT,
    Busy,
    Place,
    RunDir,
    SearchDir,
    atomic_write_json,
    best_trial,
    flatten,
    holder,
    lock,
    spent,
    summarise,
    unflatten,
    walk,
)


def result(**kw):
    base = dict(status="ok", val_loss=0.5, test_loss=0.6, val_metric=0.9, test_metric=0.88,
                metric_name="accuracy", epochs=3, wall_s=1.5, hparams={"drop": 0.1})  # fmt: skip
    return {**base, **kw}


def test_layout_places_and_records(tmp_path):
    rd = RunDir(Place("digits-mlp", "random", 2, 7).path(tmp_path))
    assert rd.path == tmp_path / "digits-mlp" / "random" / "seed2" / "trial7"
    assert (
        rd.place == Place("digits-mlp", "random", 2, 7) and rd.place.name == "random seed2 trial7"
    )
    assert Place.of(tmp_path / "x") is None and Place.of(rd.path.parent).trial is None
    assert not rd.done and rd.read_result() is None
    rd.write_spec({"experiment": "digits-mlp", "seed": 2}, torch="2.x", threads=1)
    spec = rd.read_spec()
    assert spec["seed"] == 2 and {"commit", "dirty"} <= set(spec["git"]) and "host" in spec
    assert spec["env"]["cpu"] and spec["env"]["threads"] == 1 and spec["env"]["torch"] == "2.x"
    rd.log({"row": 0, "loss": 2.0})
    rd.log({"row": 1, "loss": float("nan")})  # JSON has no NaN: stored as null
    rd.write_result(result(val_loss=math.inf))
    assert rd.done and [r["loss"] for r in rd.metrics()] == [2.0, None]
    assert rd.read_result()["val_loss"] is None and set(RESULT_KEYS) <= set(rd.read_result())
    assert sorted(p.name for p in rd.path.iterdir()) == [
        "metrics.jsonl",
        "result.json",
        "spec.json",
    ]  # no temporary files
    RunDir(tmp_path / "digits-mlp" / "stn" / "seed0").write_result(result())
    units = walk(tmp_path, "digits-mlp")
    assert [(u.place.method, u.kind, u.trials) for u in units] == [
        ("random", "search", (7,)),
        ("stn", "run", ()),
    ]


def test_result_is_checked_before_writing(tmp_path):
    rd = RunDir(tmp_path / "r")
    with pytest.raises(ValueError, match="result record: no test_loss"):
        rd.write_result({k: v for k, v in result().items() if k != "test_loss"})
    with pytest.raises(ValueError, match="unknown status 'great'"):
        rd.write_result(result(status="great"))
    assert not rd.done


# (what a damaged result.json holds, the reason the warning gives)
DAMAGED = {
    "truncated": (b'{"status": "ok", "val_lo', "not JSON"),
    "empty": (b"", "empty file"),
    "binary": (b"\x00\xff\xfe\x81garbage", "not text"),
    "list": (b"[]", "a JSON list, not an object"),
    "no keys": (b'{"status": "ok"}', "no val_loss"),
}


@pytest.mark.parametrize("case", list(DAMAGED))
def test_a_damaged_record_is_reported_and_treated_as_missing(tmp_path, capsys, case):
    content, why = DAMAGED[case]
    rd = RunDir(tmp_path / "r")
    rd.path.mkdir()
    rd.result_file.write_bytes(content)
    assert rd.read_result() is None and not rd.done  # a reader: reported, left in place
    err = capsys.readouterr().err
    assert f"warning: {rd.result_file} is unreadable ({why}" in err and "treated as missing" in err
    assert rd.result_file.read_bytes() == content
    assert rd.read_result(writer=True) is None  # a writer: set aside for inspection
    assert not rd.result_file.exists()
    assert (rd.path / "result.json.corrupt").read_bytes() == content
    assert "set aside as result.json.corrupt" in capsys.readouterr().err


def test_unreadable_lines_are_skipped_and_kept_aside_on_restart(tmp_path, capsys):
    rd = RunDir(tmp_path / "r")
    for s in range(5):
        rd.log({"row": s})
    with open(rd.metrics_file, "ab") as f:
        f.write(b'{"row": 5, "lo')  # a crash in the middle of a line
    rd.log({"row": 6})  # appended after it: the cut line does not swallow it
    with open(rd.metrics_file, "ab") as f:
        f.write(b"\x00\x01 binary garbage\n5\n")
    assert [r["row"] for r in rd.metrics()] == [0, 1, 2, 3, 4, 6]
    assert "is unreadable (3 unreadable lines); skipped them" in capsys.readouterr().err
    rd.keep_rows(3)
    assert [r["row"] for r in rd.metrics()] == [0, 1, 2]
    kept = (rd.path / "metrics.jsonl.corrupt").read_bytes().splitlines()
    assert kept == [b'{"row": 5, "lo', b"\x00\x01 binary garbage", b"5"]


def test_a_journal_keeps_every_readable_event_and_skips_repeats(tmp_path, capsys):
    search = SearchDir(tmp_path / "s")
    events = [{"event": "ask", "id": 0}, {"event": "ask", "id": 1}, {"event": "tell", "id": 0},
              {"event": "ask", "id": 0}, {"event": "tell", "id": 1}, {"event": "tell", "id": 0},
              {"event": "ask", "id": 2}]  # fmt: skip
    search.append_journal(events[:2])
    with open(search.journal_file, "ab") as f:
        f.write(b"\xff\xfe not an event\n")  # damage in the middle
    search.append_journal(events[2:])
    got = search.read_journal()
    assert got == [events[i] for i in (0, 1, 2, 4, 6)]  # nothing after the bad line is lost
    err = capsys.readouterr().err
    assert "1 unreadable line" in err and "repeated tell of trial 0, skipped" in err
    assert search.read_journal(writer=True) == got
    assert (search.path / "search_journal.jsonl.corrupt").read_bytes() == b"\xff\xfe not an event\n"
    assert len(search.journal_file.read_text().splitlines()) == len(events)


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    p = tmp_path / "x.json"
    atomic_write_json(p, {"a": 1})
    with pytest.raises(TypeError):
        atomic_write_json(p, {"a": object()})
    assert json.loads(p.read_text()) == {"a": 1}
    assert [q.name for q in tmp_path.iterdir()] == ["x.json"]


def test_best_trial_and_spent_budget():
    trials = [{"trial": 0, "status": "ok", "val_loss": 0.5}, {"trial": 1, "status": "failed"},
              {"trial": 2, "status": "ok", "val_loss": 0.4}, {"trial": 3, "status": "ok",
              "val_loss": 0.4}, {"trial": 4, "status": "diverged", "val_loss": 0.1},
              {"trial": 5, "status": "ok", "val_loss": None}]  # fmt: skip
    assert best_trial(trials)["trial"] == 2  # lowest finished ok, ties to the earlier
    assert best_trial(trials[:2] + trials[4:]) == trials[0] and best_trial([]) is None
    parent = {"epochs": 1.0, "wall_s": 2.0}
    promoted = {"epochs": 3.0, "wall_s": 5.0}  # a record from before "spent": cumulative
    assert spent(promoted, parent) == {"epochs": 2.0, "seconds": 3.0}
    assert spent({**promoted, "spent": {"epochs": 2.5, "seconds": 1.0}}, parent)["epochs"] == 2.5
    assert spent({"status": "failed", "epochs": None, "wall_s": None}) == {
        "epochs": 0.0,
        "seconds": 0.0,
    }


def test_summarise_brings_an_old_summary_up_to_date():
    trials = [{"trial": 0, "status": "ok", "val_loss": 0.5, "epochs": 1.0, "wall_s": 2.0},
              {"trial": 1, "status": "ok", "val_loss": 0.3, "epochs": 3.0, "wall_s": 5.0,
               "resume_from": 0}, {"trial": 2, "status": "pending"}]  # fmt: skip
    old = {"spent": {"trials": 2, "epochs": 3.0, "seconds": 9.0, "trial_seconds": 7.0}}
    new = summarise(old, trials)
    assert new["format"] == SUMMARY_FORMAT and new["best"]["trial"] == 1
    assert new["spent"] == {"trials": 2, "epochs": 3.0, "trial_seconds": 5.0, "seconds": 9.0}
    assert new["trials"][1]["spent"] == {"epochs": 2.0, "seconds": 3.0}


def test_flatten_names_each_hyperparameter_once():
    row = {"row": 0, "hparams": {"dropout": 0.1}, "sigmas": {"dropout": 0.5}}
    flat = flatten(row)
    assert flat == {"row": 0, "hparams.dropout": 0.1, "sigmas.dropout": 0.5}
    assert unflatten(flat) == row and unflatten({"hparams/x": 1}, "/") == {"hparams": {"x": 1}}


def _hold(folder, ready, seconds):
    with lock(folder):
        ready.set()
        time.sleep(seconds)


def test_one_writer_per_folder(tmp_path):
    folder = tmp_path / "run"
    assert holder(folder) is None and not folder.exists()  # asking writes nothing
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    other = ctx.Process(target=_hold, args=(folder, ready, 60))
    other.start()
    try:
        assert ready.wait(60)
        who = holder(folder)
        assert who["pid"] == other.pid and who["host"]
        with pytest.raises(Busy, match=f"{folder} is in use by pid {other.pid} on "):
            with lock(folder, wait=False):
                pass
    finally:
        other.kill()  # the kernel releases a dead holder's lock
        other.join()
    with lock(folder, wait=False):
        assert holder(folder)["pid"] == os.getpid()
    assert holder(folder) is None


def test_the_store_imports_nothing_but_the_standard_library():
    code = "import sys, experiments.store; print(sorted(m for m in ('torch', 'stn', 'baselines', 'numpy', 'pandas') if m in sys.modules))"  # noqa: E501
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
