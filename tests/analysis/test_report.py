"""The report of a real smoke run store: table entries against a direct computation from the
result.json files, the three table formats, and every figure rendered with labelled axes."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import matplotlib.image
import pytest

from analysis import figures
from analysis.load import final_rows, load_local


def selected_results(exp_dir: Path) -> dict[tuple[str, int], dict]:
    """Per (method, seed), straight from the files: the finished result with the lowest
    validation loss (a search's selected trial; a single run's own result), with its trial."""
    out: dict[tuple[str, int], dict] = {}
    for path in sorted(exp_dir.rglob("result.json")):
        method, seed_dir, *trial = path.relative_to(exp_dir).parts[:-1]
        rec = json.loads(path.read_text()) | {"trial": int(trial[0][5:]) if trial else None}
        key = (method, int(seed_dir[4:]))
        if rec["status"] == "ok" and (key not in out or rec["val_loss"] < out[key]["val_loss"]):
            out[key] = rec
    return out


def spent_epochs(exp_dir: Path, method: str, seed: int) -> float:
    """Epochs of a method's seed: its run's, or what its search.json says it spent."""
    folder = exp_dir / method / f"seed{seed}"
    if (folder / "search.json").exists():
        return json.loads((folder / "search.json").read_text())["spent"]["epochs"]
    return json.loads((folder / "result.json").read_text())["spent"]["epochs"]


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with open(path) as f:
        return {row["method"]: row for row in csv.DictReader(f)}


def test_table_entries_equal_a_direct_computation(smoke, report):
    exp_dir, methods, seeds = smoke.runs / smoke.experiment, smoke.methods, smoke.seeds
    chosen = selected_results(exp_dir)
    assert set(chosen) == {(m, s) for m in methods for s in seeds}
    table = read_csv(report / "table.csv")
    md = (report / "table.md").read_text()
    for method in methods:
        row = table[method]
        assert (int(row["n"]), int(row["n_expected"])) == (len(seeds), len(seeds))
        for col in ("val_loss", "test_loss", "val_metric", "test_metric"):
            vals = [chosen[(method, s)][col] for s in seeds]
            mean, std = statistics.mean(vals), statistics.stdev(vals)
            assert float(row[f"{col}_mean"]) == pytest.approx(mean, rel=1e-12)
            assert float(row[f"{col}_std"]) == pytest.approx(std, rel=1e-12)
            assert f"{mean:.3f} ± {std:.3f}" in md.split(f"| {method} |")[1].split("\n")[0]
        spent = statistics.mean(spent_epochs(exp_dir, method, s) for s in seeds)
        assert float(row["budget_epochs"]) == pytest.approx(spent)
    # a search's entry is the trial its own summary selected
    for seed in seeds:
        summary = json.loads((exp_dir / "random" / f"seed{seed}" / "search.json").read_text())
        assert summary["best"]["trial"] == chosen[("random", seed)]["trial"]
        assert summary["best"]["val_loss"] == chosen[("random", seed)]["val_loss"]


def test_markdown_latex_and_csv_agree(smoke, report):
    md = [line for line in (report / "table.md").read_text().splitlines() if line.startswith("|")]
    tex = (report / "table.tex").read_text()
    table = read_csv(report / "table.csv")
    header = [c.strip() for c in md[0].strip("|").split("|")]
    assert header[:7] == ["method", "val loss", "test loss", "val accuracy", "test accuracy",
                          "seeds", "epochs spent"]  # fmt: skip
    rows = {cells[0]: cells for cells in
            ([c.strip() for c in line.strip("|").split("|")] for line in md[2:])}  # fmt: skip
    assert list(rows) == list(table)  # the same methods in the same order
    assert tex.startswith(r"\begin{tabular}") and tex.rstrip().endswith(r"\end{tabular}")
    for method, cells in rows.items():
        tex_line = next(line for line in tex.splitlines() if line.startswith(method + " &"))
        tex_cells = [c.strip().replace(r"$\pm$", "±") for c in tex_line[:-3].split("&")]
        assert tex_cells == cells, method
        if table[method]["n"] == "0":  # asked for (the spec's methods) but not run
            assert cells[1] == "n/a" and cells[5] == f"0/{len(smoke.seeds)}"


def test_every_figure_renders_with_labelled_axes(smoke, tmp_path):
    loaded = load_local(smoke.runs, smoke.experiment)
    finals = final_rows(loaded.runs)
    hp = sorted(c[len("hparams.") :] for c in finals.columns if c.startswith("hparams."))
    log = figures.log_hparams(loaded.space)
    assert log == {"weight_decay"}  # the space the store recorded
    figs = {
        "schedules": figures.schedules(loaded.metrics, hp, "schedules", log=log),
        "best_so_far": figures.best_so_far(loaded.runs, loaded.metrics, "best so far"),
        "final_hparams": figures.final_hparams(finals, "final", log={"weight_decay"}),
    }
    for name, fig in figs.items():
        axes = [ax for ax in fig.axes if ax.get_visible()]
        assert axes and fig.get_suptitle(), name
        for ax in axes:
            assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title(), (name, ax)
            assert ax.has_data(), (name, ax.get_title())
        png = figures.save(fig, tmp_path, name)[0]
        assert png.stat().st_size > 10_000
        h, w, _ = matplotlib.image.imread(png).shape
        assert h > 300 and w > 600, (name, h, w)
        assert png.with_suffix(".pdf").stat().st_size > 1_000
    panels = {ax.get_title(): ax for ax in figs["final_hparams"].axes}
    assert set(panels) >= set(hp)
    assert panels["weight_decay"].get_yscale() == "log"
    assert panels["dropout1"].get_yscale() == "linear"


def test_report_writes_every_file(report):
    for name in ("table.md", "table.tex", "table.csv"):
        assert (report / name).stat().st_size > 100
    for name in ("schedules", "best_so_far", "final_hparams"):
        assert (report / f"{name}.png").stat().st_size > 10_000
        assert (report / f"{name}.pdf").stat().st_size > 1_000


def test_figures_are_reproducible_byte_for_byte(smoke, tmp_path):
    from analysis.report import build_report

    loaded = load_local(smoke.runs, smoke.experiment)
    first, second = (build_report(loaded, smoke.experiment, tmp_path / d) for d in "ab")
    for name in ("schedules", "best_so_far", "final_hparams"):
        for suffix in (".png", ".pdf"):
            a, b = first[name].with_suffix(suffix), second[name].with_suffix(suffix)
            assert a.read_bytes() == b.read_bytes(), a.name
    assert b"CreationDate" not in first["final_hparams"].with_suffix(".pdf").read_bytes()


def test_the_report_says_when_runs_came_from_different_environments():
    import pandas as pd

    from analysis.report import environments

    same = pd.DataFrame({"env.torch": ["2.14.1"] * 3, "env.cpu": ["x"] * 3, "env.threads": [1] * 3})
    assert environments(same) == ""
    mixed = same.assign(**{"env.threads": [1, 1, 2], "env.torch": ["2.14.1", None, "2.14.1"]})
    note = environments(mixed)
    assert "different environments" in note and "threads 1 (2 runs), 2 (1 runs)" in note
    assert "torch" not in note  # an unknown (older run) is not a difference


def test_analysis_reads_the_store_without_the_code_that_trained_it():
    import subprocess
    import sys

    code = (
        "import sys, analysis.load, analysis.report, analysis.wandb_source; "
        "print(sorted(m for m in ('torch', 'stn', 'baselines') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
