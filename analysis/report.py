"""`python -m analysis report NAME`: the tables and figures of one experiment from its runs.

    python -m analysis report digits-mlp [--runs-dir runs] [--out results/digits-mlp]
    python -m analysis report digits-mlp --source wandb --wandb-dir runs/digits-mlp  # offline
    python -m analysis report digits-mlp --source wandb --wandb-path my-team/digits-mlp

Writes table.md, table.tex, table.csv and the figures (PNG and PDF) into --out.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from .load import ENV_KEYS, Loaded, StoreError, final_rows, load_local, schedule_rows
from .tables import paper_numbers, summary_table, to_latex, to_markdown

__all__ = ["build_report", "main"]

NOTE = ("mean ± std over seeds (finished seeds / seeds asked for); a search's entry is its trial "
        "with the lowest validation loss; budget: epochs and {hours} summed over a search's "
        "trials (a trial that continued another's checkpoint counts what it trained itself), "
        "mean over seeds; n/a: no finished run.")  # fmt: skip


def _expected(spec: dict[str, Any]) -> tuple[list[str], list[int]]:
    """Methods (with the Table 1 variants) and seeds the experiment asked for."""
    methods, seeds = list(spec.get("methods") or []), list(spec.get("seeds") or [])
    variants = [v for v in (spec.get("variants") or {}) if v not in methods]
    return methods + variants, seeds


def _devices(spec: dict[str, Any]) -> tuple[str, float]:
    """What a run holds (GPUs, else CPU cores), from the spec's launch settings."""
    launch = spec.get("launch") or {}
    gpus = launch.get("gpus_per_node") or 0
    return ("GPU", float(gpus)) if gpus else ("CPU", float(launch.get("cpus_per_task") or 1))


def environments(runs: Any) -> str:
    """A note when the runs of the table ran in different environments (torch version, CPU
    model, thread count): the same seed gives the same result only in the same one."""
    parts = []
    for key in ENV_KEYS:
        counts = runs[f"env.{key}"].dropna().astype(str).value_counts()
        if len(counts) > 1:
            parts.append(
                f"{key} " + ", ".join(f"{v} ({n} runs)" for v, n in sorted(counts.items()))
            )
    if not parts:
        return ""
    return ("\nThe runs of this table ran in different environments, so results may differ in "
            "the last digits from a rerun in one: " + "; ".join(parts) + ".\n")  # fmt: skip


def build_report(loaded: Loaded, experiment: str, out: Path) -> dict[str, Path]:
    """Write table.{md,tex,csv} and the figures (PNG + PDF) into `out`; return the paths.

    loaded: the experiment's runs, metrics and spec, as `analysis.load.load_local` or
    `analysis.wandb_source.load_wandb` give them."""
    import pandas as pd

    from . import figures  # matplotlib and seaborn take seconds to import: only when drawing

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs, metrics, spec = loaded.runs, loaded.metrics, loaded.spec
    finals = final_rows(runs)
    methods, seeds = _expected(spec)
    paper = paper_numbers(experiment)
    device, per_run = _devices(spec)
    table = summary_table(finals, methods, seeds, paper, device=device, devices_per_run=per_run)
    metric = next((m for m in runs["metric_name"].dropna()), "metric")
    written = {name: out / name for name in ("table.md", "table.tex", "table.csv")}
    header = f"# {experiment}\n\n" + (f"Paper: {paper['source']}\n\n" if "source" in paper else "")
    note = "\n" + NOTE.format(hours=table.attrs["hours"]) + "\n" + environments(runs)
    written["table.md"].write_text(header + to_markdown(table, metric) + note)
    written["table.tex"].write_text(to_latex(table, metric))
    table.to_csv(written["table.csv"], index=False)

    hp_names = sorted(c[len("hparams.") :] for c in finals.columns if c.startswith("hparams."))
    log = figures.log_hparams(loaded.space)
    inits = spec.get("stn_inits") or None
    palette = figures.method_palette(set(runs["method"]) | set(methods), paper, inits)
    lineages = schedule_rows(runs)  # PBT: the lineage of each search's selected trial
    searched = f"; {', '.join(sorted(set(lineages['method'])))}: the selected trial's lineage"
    figs = {
        "schedules": figures.schedules(
            pd.concat([metrics, lineages], ignore_index=True) if len(lineages) else metrics,
            hp_names,
            f"{experiment}: hyperparameter schedules (one line per seed"
            f"{searched if len(lineages) else ''})",
            log=log,
            inits=inits,
            palette=palette,
        ),
        "best_so_far": figures.best_so_far(
            runs, metrics, f"{experiment}: best validation loss", expected=methods, palette=palette
        ),
        "final_hparams": figures.final_hparams(
            finals,
            f"{experiment}: final hyperparameters (a search: its selected trial)",
            log=log,
            expected=methods,
            palette=palette,
        ),
    }
    for name, fig in figs.items():
        png, _pdf = figures.save(fig, out, name)
        written[name] = png
    return written


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m analysis", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = ap.add_subparsers(dest="cmd", required=True)
    rep = sub.add_parser("report", help="tables and figures of one experiment")
    rep.add_argument("name", help="the experiment, e.g. digits-mlp")
    rep.add_argument("--runs-dir", default="runs", help="the run store (default: runs)")
    rep.add_argument("--out", default=None, help="default: results/NAME")
    rep.add_argument("--source", choices=["local", "wandb"], default="local")
    rep.add_argument("--wandb-dir", default=None,
                     help="--source wandb, offline: a folder holding the runs' wandb/offline-run-* "
                          "folders (e.g. the run store); searched recursively")  # fmt: skip
    rep.add_argument("--wandb-path", default=None,
                     help="--source wandb, online: ENTITY/PROJECT (default: the experiment's "
                          "name as the project)")  # fmt: skip
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    if args.source == "local" and (args.wandb_dir or args.wandb_path):
        ap.error("--wandb-dir and --wandb-path read W&B runs: add --source wandb")
    t0 = time.perf_counter()
    out = Path(args.out or f"results/{args.name}")
    try:
        if args.source == "wandb":
            from .wandb_source import load_wandb

            loaded = load_wandb(args.name, wandb_dir=args.wandb_dir, path=args.wandb_path)
        else:
            loaded = load_local(args.runs_dir, args.name)
        written = build_report(loaded, args.name, out)
    except StoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"report of {args.name} in {time.perf_counter() - t0:.1f} s:")
    for name, path in written.items():
        print(f"  {name:14s} {path}")
    return 0
