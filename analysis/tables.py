"""Method x metric tables: mean +- std over seeds, the paper's numbers beside, budget spent."""

from __future__ import annotations

import json
import math
from importlib import resources

import pandas as pd

__all__ = ["paper_numbers", "summary_table", "to_markdown", "to_latex"]

# The order rows appear in; methods not listed follow alphabetically.
METHOD_ORDER = ["fixed", "grid", "random", "bo", "hyperband", "stn", "delta-stn"]
COLUMNS = ["val_loss", "test_loss", "val_metric", "test_metric"]


def paper_numbers(experiment: str) -> dict:
    """The paper's numbers for one experiment from experiments/paper_numbers.json ({} if none)."""
    try:
        text = resources.files("experiments").joinpath("paper_numbers.json").read_text()
    except (FileNotFoundError, ModuleNotFoundError):
        return {}
    return json.loads(text).get(experiment, {})


def _order(methods) -> list[str]:
    known = [m for m in METHOD_ORDER if m in methods]
    return known + sorted(m for m in methods if m not in METHOD_ORDER)


def summary_table(finals: pd.DataFrame, expected_methods=(), expected_seeds=(),
                  paper: dict | None = None) -> pd.DataFrame:
    """One row per method: mean, std and n over seeds of each column, budget spent, and the
    paper's numbers. Methods expected but absent get a row with n = 0 (shown as n/a)."""
    paper = paper or {}
    methods = _order(set(finals["method"]) | set(expected_methods) if len(finals) else
                     set(expected_methods))
    rows = []
    for m in methods:
        g = finals[(finals["method"] == m) & (finals["status"] == "ok")] if len(finals) else finals
        row = {"method": m, "n": len(g), "n_expected": len(expected_seeds) or None}
        for c in COLUMNS:
            vals = g[c].dropna() if len(g) else pd.Series(dtype=float)
            row[f"{c}_mean"] = vals.mean() if len(vals) else math.nan
            row[f"{c}_std"] = vals.std(ddof=1) if len(vals) > 1 else math.nan
        row["budget_epochs"] = g["budget_epochs"].mean() if len(g) else math.nan
        row["budget_hours"] = g["budget_s"].mean() / 3600 if len(g) else math.nan
        p = paper.get("methods", paper).get(m, {})
        p = p if isinstance(p, dict) else {}
        row["paper_val"], row["paper_test"] = p.get("val", math.nan), p.get("test", math.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def _cell(mean: float, std: float, digits: int) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f}" + ("" if math.isnan(std) else f" ± {std:.{digits}f}")


def _display(table: pd.DataFrame, metric_name: str, digits: int = 3) -> pd.DataFrame:
    out = pd.DataFrame({"method": table["method"]})
    for c, title in [("val_loss", "val loss"), ("test_loss", "test loss"),
                     ("val_metric", f"val {metric_name}"), ("test_metric", f"test {metric_name}")]:
        out[title] = [_cell(m, s, digits) for m, s in zip(table[f"{c}_mean"], table[f"{c}_std"])]
    out["seeds"] = [f"{n}/{e}" if e else str(n) for n, e in zip(table["n"], table["n_expected"])]
    out["paper val"] = [_cell(v, math.nan, 2) for v in table["paper_val"]]
    out["paper test"] = [_cell(v, math.nan, 2) for v in table["paper_test"]]
    out["epochs spent"] = [_cell(v, math.nan, 1) for v in table["budget_epochs"]]
    out["hours spent"] = [_cell(v, math.nan, 3) for v in table["budget_hours"]]
    return out


def to_markdown(table: pd.DataFrame, metric_name: str) -> str:
    d = _display(table, metric_name)
    lines = ["| " + " | ".join(d.columns) + " |", "|" + "---|" * len(d.columns)]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in d.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def to_latex(table: pd.DataFrame, metric_name: str) -> str:
    d = _display(table, metric_name)
    esc = lambda s: str(s).replace("±", r"$\pm$").replace("_", r"\_").replace("%", r"\%")  # noqa: E731
    lines = [r"\begin{tabular}{l" + "r" * (len(d.columns) - 1) + "}", r"\toprule",
             " & ".join(esc(c) for c in d.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(esc(v) for v in r) + r" \\" for r in d.itertuples(index=False)]
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"]) + "\n"
