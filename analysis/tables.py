"""Method x metric tables: mean +- std over seeds, the paper's numbers beside, budget spent.

Table 2's shape (cifar10-alexnet, ptb-lstm, digits-mlp): one row per method in METHOD_ORDER.
Table 1's shape (ptb-output-dropout): the paper's rows in the paper's order, each with its
"setting" text from experiments/paper_numbers.json.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from importlib import resources

import pandas as pd

__all__ = ["METHOD_ORDER", "paper_numbers", "summary_table", "to_latex", "to_markdown"]

# The order rows appear in; methods not listed follow alphabetically.
METHOD_ORDER = ["fixed", "grid", "random", "bo", "tpe", "hyperband", "pbt", "stn", "delta-stn"]
COLUMNS = ["val_loss", "test_loss", "val_metric", "test_metric"]


def paper_numbers(experiment: str) -> dict:
    """The paper's numbers for one experiment from experiments/paper_numbers.json ({} if none)."""
    try:
        text = resources.files("experiments").joinpath("paper_numbers.json").read_text()
    except (FileNotFoundError, ModuleNotFoundError):
        return {}
    return json.loads(text).get(experiment, {})


def _paper_methods(paper: dict | None) -> dict[str, dict]:
    methods = (paper or {}).get("methods", {})
    return {m: v for m, v in methods.items() if isinstance(v, dict)}


def _order(methods: Iterable[str], paper: dict | None = None) -> list[str]:
    """Table 1 (the paper's rows have a "setting"): the paper's order; else METHOD_ORDER."""
    methods, rows = set(methods), _paper_methods(paper)
    first = list(rows) if any("setting" in v for v in rows.values()) else METHOD_ORDER
    known = [m for m in first if m in methods]
    return known + sorted(m for m in methods if m not in known)


def summary_table(finals: pd.DataFrame, expected_methods=(), expected_seeds=(),
                  paper: dict | None = None, device: str = "CPU",
                  devices_per_run: float = 1.0) -> pd.DataFrame:  # fmt: skip
    """One row per method: mean, std (ddof=1) and n over seeds of each column, budget spent and
    the paper's numbers. Methods expected but absent get a row with n = 0 (shown as n/a).

    Budget: epochs and `device`-hours (wall-clock x devices_per_run) summed over a search's
    trials, mean over seeds. Display settings travel in `table.attrs`."""
    paper = paper or {}
    rows_of_paper = _paper_methods(paper)
    present = set(finals["method"]) if len(finals) else set()
    rows = []
    for m in _order(present | set(expected_methods), paper):
        g = finals[(finals["method"] == m) & (finals["status"] == "ok")] if len(finals) else finals
        row = {"method": m, "setting": rows_of_paper.get(m, {}).get("setting", ""),
               "n": len(g), "n_expected": len(expected_seeds) or None}  # fmt: skip
        for c in COLUMNS:
            vals = g[c].dropna() if len(g) else pd.Series(dtype=float)
            row[f"{c}_mean"] = vals.mean() if len(vals) else math.nan
            row[f"{c}_std"] = vals.std(ddof=1) if len(vals) > 1 else math.nan
        row["budget_epochs"] = g["budget_epochs"].mean() if len(g) else math.nan
        hours = g["budget_s"].mean() * devices_per_run / 3600 if len(g) else math.nan
        row["budget_hours"] = hours
        p = rows_of_paper.get(m, {})
        row["paper_val"], row["paper_test"] = p.get("val", math.nan), p.get("test", math.nan)
        rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs.update(
        paper_metric=paper.get("metric", "metric"),
        has_paper=any("val" in v or "test" in v for v in rows_of_paper.values()),
        has_setting=any("setting" in v for v in rows_of_paper.values()),
        hours=f"{device}-hours",
    )
    return table


def _cell(mean: float, std: float, digits: int) -> str:
    if mean is None or math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f}" + ("" if math.isnan(std) else f" ± {std:.{digits}f}")


def _hours(v: float) -> str:
    """3 significant digits (smoke runs spend thousandths of an hour), whole hours from 100."""
    if v is None or math.isnan(v):
        return "n/a"
    return f"{v:.0f}" if v >= 100 else f"{v:.3g}"


def _digits(values: pd.Series) -> int:
    """3 decimals for losses and accuracies; 2 for perplexities in the tens and hundreds."""
    big = values.dropna().abs()
    return 2 if len(big) and big.max() >= 10 else 3


def _display(table: pd.DataFrame, metric_name: str) -> pd.DataFrame:
    a = table.attrs
    out = pd.DataFrame({"method": table["method"]})
    if a.get("has_setting"):
        out["setting"] = table["setting"]
    titles = [("val_loss", "val loss"), ("test_loss", "test loss"),
              ("val_metric", f"val {metric_name}"),
              ("test_metric", f"test {metric_name}")]  # fmt: skip
    for c, title in titles:
        d = _digits(table[f"{c}_mean"])
        out[title] = [_cell(m, s, d) for m, s in zip(table[f"{c}_mean"], table[f"{c}_std"])]
    out["seeds"] = [f"{n}/{e}" if e else str(n) for n, e in zip(table["n"], table["n_expected"])]
    if a.get("has_paper", True):
        pm = a.get("paper_metric", "metric")
        for c, title in [("paper_val", f"paper val {pm}"), ("paper_test", f"paper test {pm}")]:
            out[title] = [_cell(v, math.nan, 2 if pm == "perplexity" else 3) for v in table[c]]
    out["epochs spent"] = [_cell(v, math.nan, 1) for v in table["budget_epochs"]]
    out[a.get("hours", "hours") + " spent"] = [_hours(v) for v in table["budget_hours"]]
    return out


def to_markdown(table: pd.DataFrame, metric_name: str) -> str:
    """The table as GitHub Markdown ("n/a" where a method has no finished seed)."""
    d = _display(table, metric_name)
    lines = ["| " + " | ".join(d.columns) + " |", "|" + "---|" * len(d.columns)]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in d.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _tex(s: object) -> str:
    s = str(s)
    for a, b in [("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"),
                 ("#", r"\#"), ("±", r"$\pm$")]:  # fmt: skip
        s = s.replace(a, b)
    return s


def to_latex(table: pd.DataFrame, metric_name: str) -> str:
    """The table as a booktabs tabular (needs \\usepackage{booktabs})."""
    d = _display(table, metric_name)
    left = 2 if "setting" in d.columns else 1
    lines = [r"\begin{tabular}{" + "l" * left + "r" * (len(d.columns) - left) + "}", r"\toprule",
             " & ".join(_tex(c) for c in d.columns) + r" \\", r"\midrule"]  # fmt: skip
    lines += [" & ".join(_tex(v) for v in r) + r" \\" for r in d.itertuples(index=False)]
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"]) + "\n"
