"""`python -m analysis report NAME`: the tables and figures of one experiment from its runs."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

from . import figures
from .load import StoreError, final_rows, load_metrics, load_runs
from .tables import paper_numbers, summary_table, to_latex, to_markdown

__all__ = ["build_report", "main"]


def _expected(runs: pd.DataFrame) -> tuple[list[str], list[int], dict]:
    """Methods and seeds the experiment asked for, from the first spec.json that names them."""
    for path in runs["path"]:
        try:
            spec = json.loads((Path(path) / "spec.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue
        exp = spec.get("experiment") if isinstance(spec.get("experiment"), dict) else spec
        methods, seeds = exp.get("methods"), exp.get("seeds")
        if methods and seeds:
            variants = list((exp.get("variants") or {}).keys())
            return list(methods) + [v for v in variants if v not in methods], list(seeds), exp
    return [], [], {}


def build_report(runs: pd.DataFrame, experiment: str, out: Path) -> dict[str, Path]:
    """Write table.{md,tex,csv} and the figures (PNG + PDF) into `out`; return the paths."""
    out.mkdir(parents=True, exist_ok=True)
    finals = final_rows(runs)
    methods, seeds, _ = _expected(runs)
    paper = paper_numbers(experiment)
    table = summary_table(finals, methods, seeds, paper)
    metric = next((m for m in runs["metric_name"].dropna()), "metric")
    written = {"table.md": out / "table.md", "table.tex": out / "table.tex",
               "table.csv": out / "table.csv"}
    header = f"# {experiment}\n\n" + (f"Paper: {paper['source']}\n\n" if "source" in paper else "")
    written["table.md"].write_text(header + to_markdown(table, metric))
    written["table.tex"].write_text(to_latex(table, metric))
    table.to_csv(written["table.csv"], index=False)

    metrics = load_metrics(runs[runs["trial"].isna()])
    hp_names = sorted(c[3:] for c in finals.columns if c.startswith("hp."))
    figs = {
        "schedules": figures.schedules(metrics, hp_names, f"{experiment}: hyperparameter "
                                       "schedules"),
        "best_so_far": figures.best_so_far(runs, metrics, f"{experiment}: best validation loss"),
        "final_hparams": figures.final_hparams(finals, f"{experiment}: final hyperparameters"),
    }
    for name, fig in figs.items():
        png, _pdf = figures.save(fig, out, name)
        written[name] = png
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    rep = sub.add_parser("report", help="tables and figures of one experiment")
    rep.add_argument("name")
    rep.add_argument("--runs-dir", default="runs")
    rep.add_argument("--out", default=None, help="default: results/NAME")
    rep.add_argument("--source", choices=["local", "wandb"], default="local")
    rep.add_argument("--wandb-path", default=None,
                     help="ENTITY/PROJECT for --source wandb (default: the experiment's name)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        if args.source == "wandb":
            from .wandb_source import load_runs_wandb

            runs = load_runs_wandb(args.wandb_path or args.name, args.name,
                                   cache=Path(args.out or f"results/{args.name}") / "wandb-cache")
        else:
            runs = load_runs(args.runs_dir, args.name)
        written = build_report(runs, args.name, Path(args.out or f"results/{args.name}"))
    except StoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"report of {args.name} in {time.perf_counter() - t0:.1f} s:")
    for name, path in written.items():
        print(f"  {name:14s} {path}")
    return 0
