"""Nothing lost, nothing run twice, every bad input caught before work starts: bad input at the
CLI, a damaged record of each kind, two identical commands at once, a killed driver."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments.cli import main
from experiments.store import RunDir, SearchDir, holder, lock

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ["--smoke", "--methods", "stn,random", "--seeds", "0", "--set", "budget.trials=3"]

# --- bad input: one line, exit 2, nothing written ----------------------------------------------

# (extra arguments of `run digits-mlp`, a piece of the one-line error)
BAD = {
    "epochs-inf": (["--set", "task.epochs=inf"], "task.epochs: expected finite number, got 'inf'"),
    "lr-inf": (["--set", "task.lr=inf"], "task.lr: expected finite number, got 'inf'"),
    "lr-nan": (["--set", "task.lr=nan"], "task.lr: expected finite number, got 'nan'"),
    "budget-inf": (["--set", "budget.epochs=inf"], "budget.epochs: expected finite number"),
    "failures-0": (["--set", "budget.failures=0"], "budget.failures must be positive"),
    "stn-lr": (["--set", "stn.lr=0.5"], "belong to the task, set them there: stn.lr -> task.lr"),
    "stn-epochs": (["--set", "stn.epochs=3"], "stn.epochs -> task.epochs"),
    "proc": (["--runs-dir", "/proc/stn-runs"], "--runs-dir /proc/stn-runs: cannot write in /proc"),
    "sys": (["--runs-dir", "/sys/stn-runs"], "--runs-dir /sys/stn-runs: cannot write in /sys"),
    "file": (["--runs-dir", "{tmp}/a-file/runs"], "a-file is not a folder"),
    "busy": (["--launcher", "debug"], "is in use by pid {pid} on "),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path, monkeypatch, capsys):
    extra, needle = BAD[case]
    cwd, runs = tmp_path / "cwd", tmp_path / "runs"
    cwd.mkdir()
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.chdir(cwd)
    argv = ["run", "digits-mlp", *SMOKE, "--runs-dir", str(runs)]
    argv += [a.replace("{tmp}", str(tmp_path)) for a in extra]
    search = runs / "digits-mlp" / "random" / "seed0"
    with lock(search) if case == "busy" else open(os.devnull):  # another process drives it
        before = sorted(p for p in tmp_path.rglob("*"))
        code = main(argv)
        after = sorted(p for p in tmp_path.rglob("*"))
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle.replace("{pid}", str(os.getpid())) in lines[0] and "Traceback" not in err
    assert after == before  # nothing written (the busy case's lock file was there before)


# --- damaged records: named, set aside, the work redone or reused ------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """digits-mlp smoke: an STN run and a random search of 3 trials, in-process."""
    runs = tmp_path_factory.mktemp("store") / "runs"
    assert main(["run", "digits-mlp", *SMOKE, "--launcher", "debug", "--runs-dir", str(runs)]) == 0
    return runs


def copy(store: Path, tmp_path: Path) -> tuple[Path, Path, SearchDir]:
    runs = Path(shutil.copytree(store, tmp_path / "runs"))
    exp = runs / "digits-mlp"
    return runs, exp / "stn" / "seed0", SearchDir(exp / "random" / "seed0")


def run_and_status(runs: Path, capsys) -> str:
    argv = ["--runs-dir", str(runs)]
    assert main(["run", "digits-mlp", *SMOKE, "--launcher", "debug", *argv]) == 0
    assert main(["status", "digits-mlp", *argv]) == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return out.err


def consistent(stn: Path, search: SearchDir) -> None:
    """Every run finished, each metrics row once, each trial asked and told once."""
    assert RunDir(stn).read_result()["status"] == "ok"
    rows = [r["row"] for r in RunDir(stn).metrics()]
    assert rows == list(range(len(rows)))
    events = [json.loads(line) for line in search.journal_file.read_text().splitlines()]
    for kind in ("ask", "tell"):
        assert sorted(e["id"] for e in events if e["event"] == kind) == [0, 1, 2]
    assert search.read_summary()["finished"]


@pytest.mark.parametrize("content", [b'{"status": "ok", "val_lo', b"", b"\x00\xff\x81", b"[]"])
def test_a_damaged_stn_result_is_set_aside_and_the_run_recovered(store, tmp_path, capsys, content):
    runs, stn, search = copy(store, tmp_path)
    result = RunDir(stn).result_file
    original = json.loads(result.read_text())
    result.write_bytes(content)
    err = run_and_status(runs, capsys)
    assert f"warning: {result} is unreadable" in err
    assert (stn / "result.json.corrupt").read_bytes() == content
    again = json.loads(result.read_text())  # its finished checkpoint gave the same result back
    assert {k: v for k, v in again.items() if k != "wall_s"} == {
        k: v for k, v in original.items() if k != "wall_s"
    }
    consistent(stn, search)


def test_a_damaged_journal_keeps_every_readable_event(store, tmp_path, capsys):
    runs, stn, search = copy(store, tmp_path)
    lines = search.journal_file.read_bytes().splitlines(keepends=True)
    search.journal_file.write_bytes(b"".join(lines[:2] + [b"\x00 garbage \xff\n"] + lines[2:]))
    trained = {t: RunDir(search.trial(t).path).metrics() for t in range(3)}
    err = run_and_status(runs, capsys)
    assert f"warning: {search.journal_file} is unreadable (1 unreadable line)" in err
    assert len(search.journal_file.read_text().splitlines()) == len(lines)  # nothing cut
    assert (search.path / "search_journal.jsonl.corrupt").read_bytes() == b"\x00 garbage \xff\n"
    assert {t: RunDir(search.trial(t).path).metrics() for t in range(3)} == trained
    consistent(stn, search)


@pytest.mark.parametrize("damaged", ["journal", "search.json", "spec.json", "trial result"])
def test_a_binary_record_is_named_and_the_run_goes_on(store, tmp_path, capsys, damaged):
    runs, stn, search = copy(store, tmp_path)
    path = {"journal": search.journal_file, "search.json": search.summary_file,
            "spec.json": stn / "spec.json",
            "trial result": search.trial(1).result_file}[damaged]  # fmt: skip
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00 binary")
    summary = json.loads(search.summary_file.read_text()) if damaged != "search.json" else None
    err = run_and_status(runs, capsys)
    assert f"warning: {path} is unreadable" in err
    if damaged != "spec.json":  # the search's driver (a writer) set it aside
        assert path.with_name(path.name + ".corrupt").exists()
    if summary is not None:  # the selection is unchanged
        assert search.read_summary()["best"] == summary["best"]
    consistent(stn, search)


def test_a_cut_checkpoint_is_named_set_aside_and_the_run_restarts(store, tmp_path, capsys):
    runs, stn, search = copy(store, tmp_path)
    run = RunDir(stn)
    original = run.read_result()
    run.result_file.unlink()  # an interrupted run ...
    data = run.checkpoint_file.read_bytes()
    run.checkpoint_file.write_bytes(data[: len(data) // 2])  # ... whose checkpoint was cut
    err = run_and_status(runs, capsys)
    assert f"warning: {run.checkpoint_file} is unusable" in err and "starting from scratch" in err
    assert (stn / "checkpoint.pt.corrupt").stat().st_size == len(data) // 2
    assert run.read_result()["val_loss"] == original["val_loss"]  # retrained: the same run
    consistent(stn, search)


def test_garbage_in_metrics_is_skipped_by_the_report(store, tmp_path, capsys):
    from analysis.report import main as report

    runs, stn, _ = copy(store, tmp_path)
    with open(stn / "metrics.jsonl", "ab") as f:
        f.write(b"\x00\xff not a row\n{]\n")
    assert (
        report(["report", "digits-mlp", "--runs-dir", str(runs), "--out", str(tmp_path / "o")]) == 0
    )
    err = capsys.readouterr().err
    assert f"{stn / 'metrics.jsonl'} is unreadable (2 unreadable lines); skipped them" in err


# --- two commands at once, a killed driver ------------------------------------------------------


def cli(runs: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "experiments", "run", "digits-mlp", "--smoke", "--seeds", "0",
            "--launcher", "local", "--runs-dir", str(runs), "--set", "budget.epochs=none",
            *extra]  # fmt: skip


ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def wait_for(predicate, what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def told_once(search: SearchDir, n: int | None = None) -> None:
    events = [json.loads(line) for line in search.journal_file.read_text().splitlines()]
    asks = [e["id"] for e in events if e["event"] == "ask"]
    tells = [e["id"] for e in events if e["event"] == "tell"]
    assert len(asks) == len(set(asks)) and sorted(tells) == sorted(asks), events
    assert n is None or len(tells) == n
    for t in tells:
        rows = [r["row"] for r in search.trial(t).metrics()]
        assert rows == list(range(len(rows))), (t, rows)


@pytest.mark.slow
def test_two_identical_commands_at_once_train_each_run_once(tmp_path):
    runs = tmp_path / "runs"
    argv = cli(runs, "--methods", "stn,random", "--set", "budget.trials=4")
    procs = [subprocess.Popen(argv, env=ENV, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    assert outs[0][0] == outs[1][0]  # the same results table
    stn = RunDir(runs / "digits-mlp" / "stn" / "seed0")
    rows = [r["row"] for r in stn.metrics()]
    assert rows == list(range(len(rows)))  # no duplicate rows
    told_once(SearchDir(runs / "digits-mlp" / "random" / "seed0"), 4)


def orphan_cleanup(folder: Path) -> None:
    """Kill what still holds a folder's lock (a test that failed midway)."""
    who = holder(folder)
    if who and who.get("pid"):
        os.kill(int(who["pid"]), signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_driver_is_continued_by_a_rerun_with_each_trial_told_once(tmp_path, sig):
    runs = tmp_path / "runs"
    argv = cli(runs, "--methods", "random", "--set", "budget.trials=12", "--set", "task.epochs=6",
               "--set", "task.hidden=256")  # fmt: skip
    search = SearchDir(runs / "digits-mlp" / "random" / "seed0")
    driver = subprocess.Popen(argv, env=ENV, cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for(lambda: search.trial(2).result_file.exists(), "trial 2 to finish")
        driver.send_signal(sig)
        driver.wait(timeout=120)
        if sig == signal.SIGTERM:  # stopped as Ctrl-C stops it: its local job is cancelled
            assert driver.returncode == 130
            wait_for(lambda: holder(search.path) is None, "the cancelled job to end", 60)
        else:  # its local job drives on (held lock): the rerun must wait for it, then adopt
            assert holder(search.path) is not None
        again = subprocess.run(argv, env=ENV, cwd=tmp_path, capture_output=True, text=True,
                               timeout=600)  # fmt: skip
        assert again.returncode == 0, again.stderr[-3000:]
        told_once(search, 12)
        assert search.read_summary()["finished"] and holder(search.path) is None
    finally:
        orphan_cleanup(search.path)
