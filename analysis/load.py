"""Read the run store (DESIGN.md) into pandas. Only the files, never the code that wrote them.

`load_runs` gives one row per run or trial (result.json + its place in the store);
`load_metrics` the long table of every metrics.jsonl row; `load_spec` the experiment's spec;
`final_rows` one row per (method, seed): the run itself for STN-like methods, the trial selected
by validation loss for a search, with the budget the search spent.

`run_row`, `runs_frame` and `metrics_frame` build those tables from plain dicts; the W&B source
(`analysis.wandb_source`) builds its rows with the same functions, so both sources give the same
tables for the same runs.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

__all__ = [
    "KEYS",
    "RUN_COLUMNS",
    "Loaded",
    "StoreError",
    "experiment_spec",
    "final_rows",
    "iter_run_dirs",
    "load_local",
    "load_metrics",
    "load_runs",
    "load_spec",
    "metrics_frame",
    "run_row",
    "runs_frame",
]

_SEED = re.compile(r"^seed(\d+)$")
_TRIAL = re.compile(r"^trial(\d+)$")
KEYS = ["method", "seed", "trial"]  # a run's place in the store; trial is NaN for a single run
RUN_COLUMNS = ["experiment", "method", "seed", "trial", "status", "val_loss", "test_loss",
               "val_metric", "test_metric", "metric_name", "epochs", "wall_s", "path"]  # fmt: skip
_NUMBERS = ("val_loss", "test_loss", "val_metric", "test_metric", "epochs", "wall_s")


class StoreError(ValueError):
    """The run store is missing, empty or malformed (one-line message)."""


class Loaded(NamedTuple):
    """What a report needs of one experiment, from either source."""

    runs: pd.DataFrame  # load_runs' rows
    metrics: pd.DataFrame  # metrics rows of the single runs (trial NaN), see metrics_frame
    spec: dict[str, Any]  # the experiment's resolved spec (methods, seeds, variants, ...)


def iter_run_dirs(exp_dir: Path) -> Iterator[tuple[str, int, int | None, Path]]:
    """(method, seed, trial or None, folder) of every run folder under one experiment."""
    for method_dir in sorted(p for p in exp_dir.iterdir() if p.is_dir()):
        for seed_dir in sorted(method_dir.iterdir()):
            m = _SEED.match(seed_dir.name)
            if not (m and seed_dir.is_dir()):
                continue
            trials = sorted((int(t[1]), p) for p in seed_dir.iterdir()
                            if p.is_dir() and (t := _TRIAL.match(p.name)))  # fmt: skip
            if trials:
                yield from ((method_dir.name, int(m[1]), t, p) for t, p in trials)
            else:
                yield method_dir.name, int(m[1]), None, seed_dir


def _read_json(path: Path) -> dict | None:
    """A JSON object file, None if absent; anything else is a StoreError."""
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StoreError(f"malformed {path}: {e}") from None
    if not isinstance(obj, dict):
        raise StoreError(f"malformed {path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _num(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else math.nan


def run_row(experiment: str, method: str, seed: int, trial: int | None,
            result: Mapping[str, Any] | None, path: str) -> dict[str, Any]:  # fmt: skip
    """One row of `load_runs` from a result record (None: not finished, status "running").

    The hyperparameters the run's result holds (`hparams`) become columns "hp.<name>"."""
    res = result if result is not None else {"status": "running"}
    row = {"experiment": experiment, "method": method, "seed": int(seed),
           "trial": None if trial is None else int(trial),
           "status": res.get("status", "unknown"), "metric_name": res.get("metric_name"),
           "path": path}  # fmt: skip
    row.update({k: _num(res.get(k)) for k in _NUMBERS})
    hparams = res.get("hparams")
    if isinstance(hparams, Mapping):
        row.update({f"hp.{name}": _num(v) for name, v in hparams.items()})
    return row


def runs_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """`run_row` rows as a table in a fixed order: RUN_COLUMNS then sorted "hp.*" columns; rows
    by method, seed, trial (a single run, trial NaN, first)."""
    df = pd.DataFrame(list(rows))
    hp = sorted(c for c in df.columns if c.startswith("hp."))
    df = df.reindex(columns=RUN_COLUMNS + hp)
    df["trial"] = df["trial"].astype(float)
    df = df.sort_values(KEYS, na_position="first", kind="stable")
    return df.reset_index(drop=True)


def load_runs(runs_dir: str | Path, experiment: str) -> pd.DataFrame:
    """One row per run or trial; unfinished runs appear with status "running"."""
    root, exp_dir = Path(runs_dir), Path(runs_dir) / experiment
    if not exp_dir.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        where = f"; experiments there: {', '.join(found)}" if found else ""
        hint = f"run `python -m experiments run {experiment}` first, or pass --runs-dir"
        raise StoreError(f"no runs of {experiment!r} under {runs_dir} ({hint}){where}")
    rows = []
    for method, seed, trial, path in iter_run_dirs(exp_dir):
        res = _read_json(path / "result.json")
        if res is None and not (path / "spec.json").exists():
            continue
        rows.append(run_row(experiment, method, seed, trial, res, str(path)))
    if not rows:
        raise StoreError(f"the run store {exp_dir} holds no runs")
    return runs_frame(rows)


def metrics_frame(parts: Iterable[tuple[str, int, int | None, list[dict]]]) -> pd.DataFrame:
    """The long table of metrics rows: (method, seed, trial, rows) per run.

    Nested dicts (e.g. {"hparams": {"drop": 0.1}}) are flattened to "hparams.drop". Columns:
    method, seed, trial, then the rows' keys sorted."""
    frames = []
    for method, seed, trial, recs in parts:
        if recs:
            df = pd.json_normalize(recs)
            df = df[sorted(df.columns)]
            df.insert(0, "method", method)
            df.insert(1, "seed", int(seed))
            df.insert(2, "trial", math.nan if trial is None else float(trial))
            frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=KEYS)


def _jsonl(path: Path) -> list[dict]:
    recs = []
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            if isinstance(rec, dict):
                recs.append(rec)
    return recs


def load_metrics(runs: pd.DataFrame) -> pd.DataFrame:
    """Every metrics.jsonl row of the given runs, long format, with the run's keys in front."""
    parts = []
    for run in runs.itertuples(index=False):
        path = Path(run.path) / "metrics.jsonl"
        if path.is_file():
            trial = None if pd.isna(run.trial) else int(run.trial)
            parts.append((run.method, run.seed, trial, _jsonl(path)))
    return metrics_frame(parts)


def experiment_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The experiment part of one run's spec.json (or W&B config): methods, seeds, variants..."""
    exp = spec.get("experiment")
    return dict(exp) if isinstance(exp, Mapping) else {}


def load_spec(runs: pd.DataFrame) -> dict[str, Any]:
    """The experiment's spec, from the first readable spec.json of `runs` ({} if none)."""
    for path in runs["path"]:
        try:
            spec = json.loads((Path(path) / "spec.json").read_text())
        except (OSError, ValueError):
            continue
        if isinstance(spec, dict) and (exp := experiment_spec(spec)):
            return exp
    return {}


def load_local(runs_dir: str | Path, experiment: str) -> Loaded:
    """runs, the single runs' metrics and the spec of one experiment from the run store."""
    runs = load_runs(runs_dir, experiment)
    return Loaded(runs, load_metrics(runs[runs["trial"].isna()]), load_spec(runs))


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
        failed = int(g["status"].isin(["failed", "diverged"]).sum())
        row.update(n_trials=int(g["trial"].notna().sum()), budget_epochs=spent_epochs,
                   budget_s=spent_s, n_failed=failed)  # fmt: skip
        out.append(row)
    return pd.DataFrame(out)
