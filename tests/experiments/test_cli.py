"""`python -m experiments`: list, show, bad input (exit 2, one line, no traceback, nothing
written), run and status on the digits smoke variant."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.cli import main

EXPERIMENTS = (
    "digits-mlp",
    "cifar10-alexnet",
    "ptb-lstm",
    "ptb-output-dropout",
    "ptb-schedule-init",
)

# (arguments after `python -m experiments`, a piece of the expected one-line error)
BAD = {
    "experiment": (["run", "no-such"], "unknown experiment 'no-such'; valid: digits-mlp"),
    "method": (["run", "digits-mlp", "--methods", "stn,sgd"], "unknown method 'sgd'; valid: stn"),
    "key": (["run", "digits-mlp", "--set", "task.epoch=3"], "valid: name, reproduces, task."),
    "type": (["run", "digits-mlp", "--set", "task.epochs=abc"], "task.epochs: expected"),
    "seeds": (["run", "digits-mlp", "--seeds", ","], "the seed list is empty"),
    "seed-type": (["run", "digits-mlp", "--seeds", "0,x"], "comma-separated ints"),
    "budget": (["run", "digits-mlp", "--set", "budget.trials=-5"], "must be positive"),
    "launcher": (["run", "digits-mlp", "--launcher", "cloud"], "unknown launcher 'cloud'"),
    "wandb": (["run", "digits-mlp", "--wandb", "maybe"], "unknown wandb mode 'maybe'"),
    "show-key": (["show", "digits-mlp", "--set", "nope=1"], "unknown key 'nope'"),
    "status": (["status", "no-such"], "unknown experiment 'no-such'"),
    "command": (["frobnicate"], "invalid choice: 'frobnicate'"),
    "missing": (["run"], "the following arguments are required: name"),
    "dataset": (["download", "mnist", "--data-dir", "data"], "unknown dataset 'mnist'"),
}


# These also go through a real `python -m experiments` process (each costs an interpreter and a
# torch import, so not all of them); every case runs in-process below.
SUBPROCESS = ("experiment", "key", "seeds", "launcher")


def argv(case: str, runs: Path) -> list[str]:
    args = BAD[case][0]
    extra = ["--runs-dir", str(runs)] if args[0] in ("run", "status") and len(args) > 1 else []
    return [*args, *extra]


def check_one_line_error(case: str, code: int, stderr: str, cwd: Path) -> None:
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert BAD[case][1] in lines[0] and "Traceback" not in stderr
    assert not any(cwd.iterdir()), list(cwd.rglob("*"))


@pytest.fixture(scope="module")
def processes(tmp_path_factory) -> dict[str, tuple[int, str, Path]]:
    """The SUBPROCESS cases, started at once."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    procs = {}
    for case in SUBPROCESS:
        cwd = tmp_path_factory.mktemp(case)
        cmd = [sys.executable, "-m", "experiments", *argv(case, cwd / "runs")]
        procs[case] = (subprocess.Popen(cmd, cwd=cwd, env=env, text=True, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE), cwd)  # fmt: skip
    out = {}
    for case, (p, cwd) in procs.items():
        _, stderr = p.communicate(timeout=300)
        out[case] = (p.returncode, stderr, cwd)
    return out


@pytest.mark.parametrize("case", SUBPROCESS)
def test_bad_input_in_a_real_process(processes, case):
    check_one_line_error(case, *processes[case])


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, case):
    monkeypatch.chdir(tmp_path)
    code = main(argv(case, tmp_path / "runs"))
    check_one_line_error(case, code, capsys.readouterr().err, tmp_path)


def test_list_shows_the_five_experiments(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == list(EXPERIMENTS)
    assert "Table 2" in " ".join(out)


def test_show_prints_the_resolved_spec(capsys):
    assert main(["show", "digits-mlp", "--smoke", "--set", "budget.trials=7"]) == 0
    spec = json.loads(capsys.readouterr().out)
    assert spec["name"] == "digits-mlp" and spec["budget"]["trials"] == 7
    assert set(spec) >= {"task", "stn", "methods", "seeds", "launch", "searchers", "variants"}


@pytest.mark.parametrize("launcher", ["debug", "local"])
def test_run_digits_smoke_stn_writes_a_complete_run_folder(tmp_path, launcher, capsys):
    args = ["run", "digits-mlp", "--smoke", "--methods", "stn", "--seeds", "0",
            "--launcher", launcher, "--runs-dir", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    run = tmp_path / "digits-mlp" / "stn" / "seed0"
    spec = json.loads((run / "spec.json").read_text())
    result = json.loads((run / "result.json").read_text())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert spec["experiment"]["name"] == "digits-mlp" and spec["git"]["commit"]
    assert result["status"] == "ok" and 0 < result["val_loss"] < 10
    assert len(rows) >= 2 and all(
        set(r["hparams"]) == set(result["hparams"]) for r in rows if "hparams" in r
    )
    assert "stn" in capsys.readouterr().out

    assert main(["status", "digits-mlp", "--runs-dir", str(tmp_path)]) == 0
    status = capsys.readouterr().out.splitlines()
    assert status[1].split()[:3] == ["stn", "0", "ok"]


def test_a_diverged_run_records_and_prints_why(tmp_path, capsys):
    args = ["run", "digits-mlp", "--smoke", "--methods", "stn,fixed", "--seeds", "0",
            "--launcher", "debug", "--runs-dir", str(tmp_path), "--set", "task.lr=1e4"]  # fmt: skip
    assert main(args) == 0
    out, err = capsys.readouterr()
    for method in ("stn", "fixed"):
        folder = tmp_path / "digits-mlp" / method / "seed0"
        if method == "fixed":
            folder = folder / "trial0"
        result = json.loads((folder / "result.json").read_text())
        assert result["status"] == "diverged" and result["reason"].startswith("non-finite")
        (line,) = [ln for ln in out.splitlines() if ln.split()[:2] == [method, "0"]]
        assert "diverged" in line and result["reason"] in line
    assert "stn seed0 diverged: non-finite" in err  # the progress line as it finished
