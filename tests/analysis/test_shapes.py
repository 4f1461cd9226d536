"""The paper's table shapes and the schedule figure of runs from different initial values, on the
smoke store's rows relabelled as the methods of those experiments."""

from __future__ import annotations

import json
from importlib import resources

import matplotlib.pyplot as plt
import numpy as np
import pytest

from analysis import figures
from analysis.load import final_rows, load_local
from analysis.tables import paper_numbers, summary_table, to_latex, to_markdown


@pytest.fixture(scope="module")
def loaded(smoke):
    return load_local(smoke.runs, smoke.experiment)


def header(md: str) -> list[str]:
    return [c.strip() for c in md.splitlines()[0].strip("|").split("|")]


def test_table1_rows_follow_the_paper_with_their_settings(loaded):
    paper = paper_numbers("ptb-output-dropout")
    rows = list(paper["methods"])  # the paper's order
    finals = final_rows(loaded.runs)
    finals["method"] = finals["method"].map({"stn": "stn", "random": "noise-68",
                                             "fixed": "fixed-68"})  # fmt: skip
    table = summary_table(finals, rows, [0, 1], paper)
    assert table["method"].tolist() == rows  # every row, run or not, in the paper's order
    md = to_markdown(table, "perplexity")
    assert header(md)[:2] == ["method", "setting"]
    assert "paper val perplexity" in header(md) and "paper test perplexity" in header(md)
    for method, spec in paper["methods"].items():
        line = next(x for x in md.splitlines() if x.startswith(f"| {method} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1] == spec["setting"]
        assert cells[header(md).index("paper val perplexity")] == f"{spec['val']:.2f}"
        run = method in ("stn", "noise-68", "fixed-68")
        assert cells[header(md).index("seeds")] == ("2/2" if run else "0/2")
    assert r"\begin{tabular}{llrrr" in to_latex(table, "perplexity")


@pytest.mark.parametrize(
    "experiment, title",
    [("cifar10-alexnet", "paper val loss"), ("ptb-lstm", "paper val perplexity")],
)
def test_paper_columns_say_the_papers_metric(loaded, experiment, title):
    paper = paper_numbers(experiment)
    finals = final_rows(loaded.runs)
    md = to_markdown(summary_table(finals, ["stn", "random"], [0, 1], paper), "accuracy")
    assert title in header(md) and "setting" not in header(md)  # Table 2: no settings
    stn = next(x for x in md.splitlines() if x.startswith("| stn |"))
    assert f"{paper['methods']['stn']['test']}" in stn
    table = summary_table(finals, (), (), paper_numbers("digits-mlp"))
    assert not any(c.startswith("paper") for c in header(to_markdown(table, "accuracy")))


def test_paper_numbers_name_their_metric():
    text = resources.files("experiments").joinpath("paper_numbers.json").read_text()
    for name, entry in json.loads(text).items():
        if not name.startswith("_"):
            assert entry["metric"] in ("loss", "perplexity", "accuracy"), name


def test_schedules_from_initial_values_use_a_sequential_palette(loaded):
    metrics = loaded.metrics.copy()
    assert set(metrics["method"]) == {"stn"} and set(metrics["seed"]) == {0, 1}
    metrics["method"] = metrics["seed"].map({0: "stn-init90", 1: "stn-init05"})
    inits = {"stn-init05": {"dropout1": 0.05}, "stn-init90": {"dropout1": 0.9}}
    fig = figures.schedules(metrics, ["dropout1"], "from two initial values", inits=inits)
    legend = fig.legends[0]
    assert legend.get_title().get_text() == "initial dropout1"
    assert [t.get_text() for t in legend.get_texts()] == ["0.05", "0.9"]  # low to high
    ax = fig.axes[0]
    lines = {tuple(np.round(line.get_color(), 3)) for line in ax.get_lines()
             if len(line.get_xdata()) > 1}  # fmt: skip
    assert len(lines) == 2  # one colour per initial value
    starts = ax.collections[0].get_offsets()  # the initial values, marked at x = 0
    assert sorted(map(tuple, starts)) == [(0.0, 0.05), (0.0, 0.9)]
    palette = figures.method_palette(inits, None, inits)
    assert list(palette) == ["stn-init05", "stn-init90"]
    plt.close(fig)
