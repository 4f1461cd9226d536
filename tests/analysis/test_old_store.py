"""A run store written before the run-store redesign (commit 936cd7f, tests/fixtures) still
loads, and reports the table it reported then; only the budget columns differ, on purpose."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from analysis.load import final_rows, load_local
from analysis.report import build_report
from experiments.status import status

OLD = Path(__file__).resolve().parents[1] / "fixtures" / "store_936cd7f"
SAME = ["method", "setting", "n", "n_expected"] + [
    f"{c}_{s}"
    for c in ("val_loss", "test_loss", "val_metric", "test_metric")
    for s in ("mean", "std")
]


def rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path) as f:
        return {r["method"]: r for r in csv.DictReader(f)}


def test_the_old_store_reports_the_same_table(tmp_path):
    build_report(load_local(OLD, "digits-mlp"), "digits-mlp", tmp_path)
    old, new = rows(OLD / "table_936cd7f.csv"), rows(tmp_path / "table.csv")
    assert list(new) == list(old)
    for method in old:
        assert {k: new[method][k] for k in SAME} == {k: old[method][k] for k in SAME}, method
    # epochs spent: now what search.json says (a promoted Hyperband trial counts its own
    # epochs), where 936cd7f added the promoted trial's parent's epochs again
    for method in ("grid", "random", "bo", "hyperband"):
        spent = [json.loads((OLD / "digits-mlp" / method / f"seed{k}" / "search.json")
                            .read_text())["spent"]["epochs"] for k in (0, 1)]  # fmt: skip
        assert float(new[method]["budget_epochs"]) == pytest.approx(sum(spent) / 2), method
    assert (float(old["hyperband"]["budget_epochs"]), float(new["hyperband"]["budget_epochs"])) == (
        6.0, 5.0)  # fmt: skip
    assert float(new["hyperband"]["budget_hours"]) < float(old["hyperband"]["budget_hours"])
    for name in ("schedules", "best_so_far", "final_hparams"):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000


def test_the_old_store_selects_what_its_searches_selected():
    finals = final_rows(load_local(OLD, "digits-mlp").runs).set_index(["method", "seed"])
    for method in ("fixed", "grid", "random", "bo", "hyperband"):
        for seed in (0, 1):
            summary = json.loads((OLD / "digits-mlp" / method / f"seed{seed}" / "search.json")
                                 .read_text())  # fmt: skip
            assert finals.loc[(method, seed), "trial"] == summary["best"]["trial"]
            assert finals.loc[(method, seed), "val_loss"] == summary["best"]["val_loss"]


def test_status_and_a_rerun_read_the_old_store(tmp_path):
    runs = Path(shutil.copytree(OLD, tmp_path / "runs"))
    rows_ = {(r["method"], r["seed"]): r for r in status(runs, "digits-mlp")}
    assert rows_[("stn", 0)]["status"] == "ok" and rows_[("hyperband", 1)]["finished"]
    assert rows_[("random", 0)]["done"] == 4


def test_rerunning_the_command_that_wrote_the_old_store_reuses_it(tmp_path):
    from experiments.cli import main

    runs = Path(shutil.copytree(OLD, tmp_path / "runs"))
    results = sorted(runs.rglob("result.json"))
    before = {p: p.stat().st_mtime_ns for p in results} | {
        p: p.read_bytes() for p in runs.rglob("metrics.jsonl")}  # fmt: skip
    # the methods it ran then (methods added to the experiment since would run now)
    methods = ",".join(sorted(p.name for p in (OLD / "digits-mlp").iterdir() if p.is_dir()))
    argv = ["run", "digits-mlp", "--smoke", "--launcher", "debug", "--runs-dir", str(runs),
            "--seeds", "0,1", "--set", "budget.epochs=4", "--methods", methods]  # fmt: skip
    assert main(argv) == 0
    after = {p: p.stat().st_mtime_ns for p in results} | {
        p: p.read_bytes() for p in runs.rglob("metrics.jsonl")}  # fmt: skip
    assert after == before  # nothing trained again
    assert not list(runs.rglob("checkpoint.pt")) and not list(runs.rglob("*.corrupt"))
