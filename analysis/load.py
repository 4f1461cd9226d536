"""Read the run store (DESIGN.md) into pandas. Only the files, never the code that wrote them.

`load_runs` gives one row per run or trial (result.json + a few spec.json fields);
`load_metrics` the long table of every metrics.jsonl row; `final_rows` one row per
(method, seed): the run itself for STN-like methods, the trial selected by validation loss for a
search, with the budget the search spent.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

__all__ = ["StoreError", "iter_run_dirs", "load_runs", "load_metrics", "final_rows"]

_SEED = re.compile(r"^seed(\d+)$")
_TRIAL = re.compile(r"^trial(\d+)$")
RUN_COLUMNS = ["experiment", "method", "seed", "trial", "status", "val_loss", "test_loss",
               "val_metric", "test_metric", "metric_name", "epochs", "wall_s", "path"]


class StoreError(ValueError):
    """The run store is missing, empty or malformed (one-line message)."""


def iter_run_dirs(exp_dir: Path) -> Iterator[tuple[str, int, int | None, Path]]:
    """(method, seed, trial or None, folder) of every run folder under one experiment."""
    for method_dir in sorted(p for p in exp_dir.iterdir() if p.is_dir()):
        for seed_dir in sorted(method_dir.iterdir()):
            m = _SEED.match(seed_dir.name)
            if not (m and seed_dir.is_dir()):
                continue
            trials = sorted((int(t[1]), p) for p in seed_dir.iterdir()
                            if p.is_dir() and (t := _TRIAL.match(p.name)))
            if trials:
                yield from ((method_dir.name, int(m[1]), t, p) for t, p in trials)
            else:
                yield method_dir.name, int(m[1]), None, seed_dir


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StoreError(f"malformed {path}: {e}") from None


def _num(x) -> float:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else math.nan


def load_runs(runs_dir: str | Path, experiment: str) -> pd.DataFrame:
    """One row per run or trial; unfinished runs appear with status "running"."""
    exp_dir = Path(runs_dir) / experiment
    if not exp_dir.is_dir():
        raise StoreError(f"no runs of {experiment!r} under {runs_dir} (run `python -m "
                         f"experiments run {experiment}` first, or pass --runs-dir)")
    rows = []
    for method, seed, trial, path in iter_run_dirs(exp_dir):
        res = _read_json(path / "result.json")
        if res is None and not (path / "spec.json").exists():
            continue
        res = res or {"status": "running"}
        row = {"experiment": experiment, "method": method, "seed": seed, "trial": trial,
               "status": res.get("status", "unknown"), "metric_name": res.get("metric_name"),
               "path": str(path)}
        for k in ("val_loss", "test_loss", "val_metric", "test_metric", "epochs", "wall_s"):
            row[k] = _num(res.get(k))
        for name, v in (res.get("hparams") or {}).items():
            row[f"hp.{name}"] = _num(v)
        rows.append(row)
    if not rows:
        raise StoreError(f"the run store {exp_dir} holds no runs")
    return pd.DataFrame(rows)


def load_metrics(runs: pd.DataFrame) -> pd.DataFrame:
    """Every metrics.jsonl row of the given runs, long format, with the run's keys in front.

    Nested dicts (e.g. {"hparams": {"drop": 0.1}}) are flattened to "hparams.drop".
    """
    frames = []
    for run in runs.itertuples(index=False):
        path = Path(run.path) / "metrics.jsonl"
        if not path.exists():
            continue
        recs = []
        with open(path) as f:
            for line in f:
                try:
                    recs.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line cut by a crash
        if recs:
            df = pd.json_normalize(recs)
            df.insert(0, "method", run.method)
            df.insert(1, "seed", run.seed)
            df.insert(2, "trial", run.trial)
            frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def final_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, seed): a single run as it is; for a search, the finished trial with
    the lowest validation loss, with the search's spent epochs and seconds (all its trials)."""
    out = []
    for _, g in runs.groupby(["method", "seed"], sort=True):
        ok = g[(g["status"] == "ok") & g["val_loss"].notna()]
        spent_epochs, spent_s = g["epochs"].sum(min_count=1), g["wall_s"].sum(min_count=1)
        if ok.empty:
            row = g.iloc[0].to_dict() | {"status": "none-ok"}
        else:
            row = ok.loc[ok["val_loss"].idxmin()].to_dict()
        row.update(n_trials=int(g["trial"].notna().sum()), budget_epochs=spent_epochs,
                   budget_s=spent_s, n_failed=int(g["status"].isin(["failed", "diverged"]).sum()))
        out.append(row)
    return pd.DataFrame(out)
