"""A PBT search in the report: its selected lineage drawn as a step line beside the other
schedules, a replayed schedule drawn from its training rows, pbt in the table."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis import figures
from analysis.load import load_local, schedule_rows
from analysis.report import build_report
from experiments.registry import get
from experiments.runner import run_experiment
from experiments.spec import Variant, apply_overrides


@pytest.fixture(scope="module")
def pbt_store(tmp_path_factory):
    """digits-mlp --smoke: pbt (2 members, 2 generations of half an epoch) and a variant
    replaying its selected lineage, one seed, in-process."""
    runs = tmp_path_factory.mktemp("pbt-store")
    exp = apply_overrides(get("digits-mlp"), {"variants": {
        "pbt-schedule": Variant(from_method="pbt", use="schedule")}})  # fmt: skip
    run_experiment(exp, ["pbt", "pbt-schedule"], [0], runs, launcher="debug", smoke=True)
    return runs


def test_schedule_rows_are_the_selected_lineage(pbt_store):
    loaded = load_local(pbt_store, "digits-mlp")
    rows = schedule_rows(loaded.runs)
    summary = json.loads((pbt_store / "digits-mlp/pbt/seed0/search.json").read_text())
    segments = summary["best"]["lineage"]
    expect = [(x, seg["params"]["dropout1"]) for seg in segments
              for x in (seg["from_epoch"], seg["to_epoch"])]  # fmt: skip
    assert list(zip(rows["epoch"], rows["hparams.dropout1"])) == expect
    assert set(rows["method"]) == {"pbt"}  # a replay is a single run, drawn from its rows


def test_the_schedules_figure_draws_pbt_beside_the_replay(pbt_store, tmp_path, monkeypatch):
    drawn = {}

    def keep(fig, out, name):
        drawn[name] = fig
        return [out / f"{name}.png", out / f"{name}.pdf"]

    monkeypatch.setattr(figures, "save", keep)
    loaded = load_local(pbt_store, "digits-mlp")
    build_report(loaded, "digits-mlp", tmp_path)
    table = (tmp_path / "table.md").read_text()
    assert "| pbt |" in table and "| pbt-schedule |" in table
    fig = drawn["schedules"]
    assert "pbt: the selected trial's lineage" in fig.get_suptitle()
    panel = next(ax for ax in fig.axes if ax.get_title() == "dropout1")
    lines = [(np.asarray(ln.get_xdata()), np.asarray(ln.get_ydata())) for ln in panel.lines]
    rows = schedule_rows(loaded.runs)
    assert any(np.array_equal(x, rows["epoch"]) for x, _ in lines)  # pbt's steps
    # the replay's line: its training steps' values only (it evaluates at its base values)
    replay = [r for r in loaded.metrics.to_dict("records") if r["method"] == "pbt-schedule"]
    trained = {r["hparams.dropout1"] for r in replay if r["kind"] == "train"}
    (ys,) = [y for x, y in lines if len(x) == sum(r["kind"] == "train" for r in replay)]
    assert set(ys) == trained


def test_a_pbt_search_whose_members_never_changed_hyperparameters_still_has_its_schedule():
    """Decided by the searcher's capability, not by whether a copy happened to explore: PBT
    rows whose children kept their parents' values are drawn; Hyperband's promotions are not."""
    import pandas as pd

    def trials(method):
        return [{"method": method, "seed": 0, "trial": float(t), "status": "ok",
                 "epochs": float(t + 1), "resume_from": float(t - 1) if t else np.nan,
                 "selected": t == 1, "hparams.dropout1": 0.3} for t in (0, 1)]  # fmt: skip

    rows = schedule_rows(pd.DataFrame(trials("pbt") + trials("hyperband")))
    assert set(rows["method"]) == {"pbt"} and list(rows["epoch"]) == [0.0, 1.0, 1.0, 2.0]
    assert list(rows["hparams.dropout1"]) == [0.3] * 4
