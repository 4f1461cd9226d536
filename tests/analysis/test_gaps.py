"""Gaps and bad input: a partial store renders with the gaps marked; an empty or malformed one
gives a one-line error and exit code 2."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from analysis import figures
from analysis.load import load_local, load_runs
from analysis.report import build_report, main


def notes(fig) -> list[str]:
    """The "no data: ..." notes of a figure (in the figure or in its axes)."""
    texts = [t.get_text() for t in fig.texts] + [t.get_text() for a in fig.axes for t in a.texts]
    return [t for t in texts if t.startswith("no data: ")]


def test_partial_store_renders_with_the_gaps_marked(store_copy, tmp_path, monkeypatch):
    exp_dir = store_copy.runs / store_copy.experiment
    shutil.rmtree(exp_dir / "stn" / "seed1")  # a method's seed lost
    search = exp_dir / "random" / "seed0"  # a search whose trials never finished:
    for record in [search / "search.json", *search.glob("trial*/result.json")]:
        record.unlink()  # seed 0 has nothing to select
    with open(exp_dir / "stn" / "seed0" / "metrics.jsonl", "ab") as f:
        f.write(b'{"kind": "eval", "step": \n\x00\xff garbage\n')  # a cut row, and garbage

    drawn = []

    def keep(fig, out, name):  # the report's figures, to look at; no files needed
        drawn.append(fig)
        return [out / f"{name}.png", out / f"{name}.pdf"]

    monkeypatch.setattr(figures, "save", keep)
    loaded = load_local(store_copy.runs, store_copy.experiment)
    build_report(loaded, store_copy.experiment, tmp_path)

    with open(tmp_path / "table.csv") as f:
        table = {row["method"]: row for row in csv.DictReader(f)}
    md = (tmp_path / "table.md").read_text()
    cells = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
             for line in md.splitlines() if line.startswith("| ")}  # fmt: skip
    assert table["stn"]["n"] == "1" and cells["stn"][5] == "1/2"
    assert cells["stn"][1] != "n/a" and "±" not in cells["stn"][1]  # one seed: no std
    assert table["random"]["n"] == "1" and cells["random"][5] == "1/2"
    assert cells["fixed"][5] == "2/2"
    assert cells["grid"][1:5] == ["n/a"] * 4 and cells["grid"][5] == "0/2"

    schedules, best, final = drawn
    assert not notes(schedules)  # stn seed 0 is there
    for fig in (best, final):
        (note,) = notes(fig)
        missing = {"grid", "bo", "tpe", "hyperband", "pbt", "delta-stn"}
        assert set(note[len("no data: ") :].split(", ")) == missing
        plt.close(fig)
    plt.close(schedules)


def test_schedule_panels_without_data_say_so(smoke):
    loaded = load_local(smoke.runs, smoke.experiment)
    no_stn = loaded.metrics.iloc[0:0]
    fig = figures.schedules(no_stn, ["dropout1", "weight_decay"], "nothing")
    assert notes(fig) == ["no data: dropout1", "no data: weight_decay"]
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes if ax.get_visible())
    empty = figures.best_so_far(loaded.runs.iloc[0:0], no_stn, "nothing", expected=["stn"])
    assert "no data: stn" in notes(empty)
    plt.close(fig)
    plt.close(empty)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analysis", "report", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.mark.parametrize("case", ["empty", "unreadable", "no-offline-runs"])
def test_bad_store_is_one_line_and_exit_2(case, tmp_path):
    runs = tmp_path / "runs"
    (runs / "digits-mlp" / "stn" / "seed0").mkdir(parents=True)
    args = ["digits-mlp", "--runs-dir", str(runs), "--out", str(tmp_path / "out")]
    result = runs / "digits-mlp" / "stn" / "seed0" / "result.json"
    if case == "unreadable":
        result.write_text("{not json")
    if case == "no-offline-runs":
        args += ["--source", "wandb", "--wandb-dir", str(runs)]
    done = cli(*args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "Traceback" not in done.stderr, done.stderr
    assert {"empty": "holds no runs", "unreadable": "holds no runs", "no-offline-runs":
            "--wandb offline"}[case] in lines[-1]  # fmt: skip
    if case == "unreadable":  # named on its own line, left in place
        assert (
            lines[0] == f"warning: {result} is unreadable (not JSON: Expecting property "
            "name enclosed in double quotes at line 1); treated as missing"
        )
        assert result.read_text() == "{not json"
    else:
        assert len(lines) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", [b'["a list"]', b"\xff\xfe", b"", b'{"status": "ok", '])
def test_a_damaged_trial_result_is_named_and_the_rest_loads(store_copy, content, capsys):
    exp_dir = store_copy.runs / store_copy.experiment
    damaged = exp_dir / "fixed" / "seed0" / "trial0" / "result.json"
    summary = exp_dir / "fixed" / "seed0" / "search.json"
    damaged.write_bytes(content)
    summary.write_bytes(content)  # the search's summary too: read from the trial folders
    runs = load_runs(store_copy.runs, store_copy.experiment)
    fixed = runs[runs["method"] == "fixed"].set_index("seed")
    assert fixed.loc[0, "status"] == "running" and fixed.loc[1, "status"] == "ok"
    err = capsys.readouterr().err
    assert f"warning: {damaged} is unreadable" in err and f"warning: {summary} is unreadable" in err
    assert damaged.read_bytes() == content  # a reader leaves it for the writer to set aside


def test_unknown_experiment_lists_the_ones_there(tmp_path, capsys):
    (tmp_path / "digits-mlp").mkdir()
    assert main(["report", "cifar10", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "experiments there: digits-mlp" in err


def test_unfinished_runs_are_listed_as_running(store_copy):
    exp_dir = store_copy.runs / store_copy.experiment
    (exp_dir / "stn" / "seed0" / "result.json").unlink()  # spec.json stays: started, not done
    runs = load_runs(store_copy.runs, store_copy.experiment)
    stn = runs[runs["method"] == "stn"].set_index("seed")
    assert stn.loc[0, "status"] == "running" and pd.isna(stn.loc[0, "val_loss"])
    assert stn.loc[1, "status"] == "ok"
