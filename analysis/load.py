"""Read the run store (DESIGN.md) into pandas: only its files, through `experiments.store`, the
one module that knows their layout, formats and read policy (standard library only; nothing
of the code that trained the runs is imported).

`load_runs` gives one row per run or trial: a single run from its result.json, a search's
trials from its search.json (what each trial was asked, its record, the budget it spent and
which trial the search selected), or from the trial folders while a search has no summary yet.
`load_metrics` is the long table of the single runs' metrics.jsonl rows; `load_spec` the
experiment's spec, search space and the environments the runs recorded; `final_rows` one row
per (method, seed): the run itself, or the search's selected trial with the budget it spent.

`schedule_rows` is the hyperparameter schedule a search followed where its trials continue
other trials' checkpoints with other hyperparameters (PBT): its selected trial's lineage
(`experiments.store.lineage`), drawn beside STN's trajectories.

`run_row`, `runs_frame` and `metrics_frame` build those tables from plain dicts; the W&B source
(`analysis.wandb_source`) builds its rows with the same functions, so both sources give the same
tables for the same runs. A hyperparameter's column is "hparams.<name>" in every table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from experiments import store

__all__ = [
    "ENV_KEYS",
    "KEYS",
    "RUN_COLUMNS",
    "Loaded",
    "StoreError",
    "experiment_spec",
    "final_rows",
    "load_local",
    "load_metrics",
    "load_runs",
    "load_spec",
    "mark_selected",
    "metrics_frame",
    "run_row",
    "runs_frame",
    "schedule_rows",
]

KEYS = ["method", "seed", "trial"]  # a run's place in the store; trial is NaN for a single run
RUN_COLUMNS = ["experiment", "method", "seed", "trial", "resume_from", "status", "reason",
               "val_loss", "test_loss", "val_metric", "test_metric", "metric_name", "epochs",
               "wall_s", "spent_epochs", "spent_s", "selected", "path"]  # fmt: skip
_NUMBERS = ("val_loss", "test_loss", "val_metric", "test_metric", "epochs", "wall_s")
ENV_KEYS = ("torch", "cpu", "threads")  # what makes two runs of one seed comparable bit for bit


class StoreError(ValueError):
    """The run store is missing, empty or malformed (one-line message)."""


class Loaded(NamedTuple):
    """What a report needs of one experiment, from either source."""

    runs: pd.DataFrame  # load_runs' rows
    metrics: pd.DataFrame  # metrics rows of the single runs (trial NaN), see metrics_frame
    spec: dict[str, Any]  # the experiment's resolved spec (methods, seeds, variants, ...)
    space: dict[str, dict[str, Any]] = {}  # name -> the recorded HParam (low, high, log, ...)


def _num(x: Any) -> float:
    return float(x) if store.finite(x) else math.nan


Record = Mapping[str, Any]


def run_row(experiment: str, method: str, seed: int, trial: int | None, result: Record | None,
            path: str, *, parent: Record | None = None, selected: bool | None = None,
            env: Record | None = None, resume_from: int | None = None,
            ) -> dict[str, Any]:  # fmt: skip
    """One row of `load_runs` from a result record (None: not finished, status "running").
    `resume_from`: the trial whose checkpoint this trial continued (`parent` is its record).

    The hyperparameters the record holds ("hparams", or a search.json row's "params") become
    columns "hparams.<name>"; the budget the run spent itself (`store.spent`, a promotion's
    parent taken off) "spent_epochs" and "spent_s"; the environment "env.<key>"."""
    res = result if result is not None else {"status": "running"}
    row = {"experiment": experiment, "method": method, "seed": int(seed),
           "trial": None if trial is None else int(trial),
           "resume_from": None if resume_from is None else int(resume_from),
           "status": res.get("status", "unknown"),
           "reason": res.get("reason") or res.get("error"), "metric_name": res.get("metric_name"),
           "selected": selected, "path": path}  # fmt: skip
    row.update({k: _num(res.get(k)) for k in _NUMBERS})
    own = store.spent(res, parent) if result is not None else {"epochs": 0.0, "seconds": 0.0}
    row.update(spent_epochs=own["epochs"], spent_s=own["seconds"])
    hparams = res.get("hparams") if isinstance(res.get("hparams"), Mapping) else res.get("params")
    if isinstance(hparams, Mapping):
        row.update({f"hparams.{name}": _num(v) for name, v in hparams.items()})
    row.update({f"env.{k}": (env or {}).get(k) for k in ENV_KEYS})
    return row


def runs_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """`run_row` rows as a table in a fixed order: RUN_COLUMNS, the "env.*" then the sorted
    "hparams.*" columns; rows by method, seed, trial (a single run, trial NaN, first)."""
    df = pd.DataFrame(list(rows))
    hp = sorted(c for c in df.columns if c.startswith("hparams."))
    df = df.reindex(columns=RUN_COLUMNS + [f"env.{k}" for k in ENV_KEYS] + hp)
    df["trial"] = df["trial"].astype(float)
    df = df.sort_values(KEYS, na_position="first", kind="stable")
    return df.reset_index(drop=True)


def _env(spec: Mapping[str, Any] | None) -> dict[str, Any]:
    env = (spec or {}).get("env")
    return dict(env) if isinstance(env, Mapping) else {}


def _search_rows(experiment: str, unit: store.Unit) -> list[dict[str, Any]]:
    """A search's trial rows: from search.json, else (no summary yet) from its trial folders."""
    search, place = store.SearchDir(unit.path), unit.place
    summary = search.read_summary()
    env = {t: _env(search.trial(t).read_spec()) for t in unit.trials}
    if summary is None:
        records = {t: search.trial(t).read_result() for t in unit.trials}
        best = store.best_trial([{**r, "trial": t} for t, r in records.items() if r])
        parents = {t: store.Place.of((search.trial(t).read_spec() or {}).get("resume_from") or "")
                   for t in unit.trials}  # fmt: skip
        return [run_row(experiment, place.method, place.seed, t, rec,
                        str(search.trial(t).path), env=env.get(t),
                        selected=best is not None and best["trial"] == t,
                        resume_from=parents[t] and parents[t].trial)
                for t, rec in records.items()]  # fmt: skip
    chosen = (summary.get("best") or {}).get("trial")
    metric = next((t.get("metric_name") for t in summary["trials"] if t.get("metric_name")), None)
    if metric is None and chosen is not None:  # a summary from before trials named it
        metric = (search.trial(chosen).read_result() or {}).get("metric_name")
    rows = []
    for t in summary["trials"]:
        rec = None if t.get("status") == "pending" else {"metric_name": metric, **t}
        rows.append(run_row(experiment, place.method, place.seed, t["trial"], rec,
                            str(search.trial(t["trial"]).path), selected=t["trial"] == chosen,
                            env=env.get(t["trial"]), resume_from=t.get("resume_from")))  # fmt: skip
    return rows


def load_runs(runs_dir: str | Path, experiment: str) -> pd.DataFrame:
    """One row per run or trial; unfinished runs appear with status "running"."""
    root, exp_dir = Path(runs_dir), Path(runs_dir) / experiment
    if not exp_dir.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        where = f"; experiments there: {', '.join(found)}" if found else ""
        hint = f"run `python -m experiments run {experiment}` first, or pass --runs-dir"
        raise StoreError(f"no runs of {experiment!r} under {runs_dir} ({hint}){where}")
    rows = []
    for unit in store.walk(runs_dir, experiment):
        if unit.kind == "search":
            rows += _search_rows(experiment, unit)
            continue
        run = store.RunDir(unit.path)
        res, spec = run.read_result(), run.read_spec()
        if res is not None or spec is not None:
            rows.append(run_row(experiment, unit.place.method, unit.place.seed, None, res,
                                str(unit.path), selected=True, env=_env(spec)))  # fmt: skip
    if not rows:
        raise StoreError(f"the run store {exp_dir} holds no runs")
    return runs_frame(rows)


def metrics_frame(parts: Iterable[tuple[str, int, int | None, list[dict]]]) -> pd.DataFrame:
    """The long table of metrics rows: (method, seed, trial, rows) per run.

    Nested objects ({"hparams": {"drop": 0.1}}) become dotted columns ("hparams.drop"), as
    `experiments.store.flatten` names them. Columns: method, seed, trial, then the rows' keys
    sorted."""
    frames = []
    for method, seed, trial, recs in parts:
        if recs:
            df = pd.DataFrame([store.flatten(r) for r in recs])
            df = df[sorted(df.columns)]
            df.insert(0, "method", method)
            df.insert(1, "seed", int(seed))
            df.insert(2, "trial", math.nan if trial is None else float(trial))
            frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=KEYS)


def load_metrics(runs: pd.DataFrame) -> pd.DataFrame:
    """Every metrics.jsonl row of the given runs, long format, with the run's keys in front."""
    parts = []
    for run in runs.itertuples(index=False):
        trial = None if pd.isna(run.trial) else int(run.trial)
        parts.append((run.method, run.seed, trial, store.RunDir(run.path).metrics()))
    return metrics_frame(parts)


def schedule_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """The schedule each search followed whose trials continue a parent's checkpoint with other
    hyperparameters (PBT; not Hyperband, whose promotions keep theirs): per (method, seed), the
    lineage of the trial the search selected, as rows "epoch" and "hparams.<name>", two per
    segment (its start and end), in drawing order. Empty when no search did."""
    hp = [c for c in runs.columns if c.startswith("hparams.")]
    out = []
    told = runs[runs["trial"].notna() & runs["status"].isin(store.STATUSES)]
    for (method, seed), g in told.groupby(["method", "seed"], sort=True):
        recs = [{"trial": int(r["trial"]), "epochs": r["epochs"],
                 "resume_from": None if pd.isna(r["resume_from"]) else int(r["resume_from"]),
                 "params": {c: r[c] for c in hp}} for _, r in g.iterrows()]  # fmt: skip
        if not _follows_schedules(method, recs):
            continue
        chosen = g[(g["selected"] == True) & (g["status"] == "ok")]  # noqa: E712
        if chosen.empty:
            continue
        for seg in store.lineage(recs, int(chosen["trial"].iloc[0])):
            for x in (seg["from_epoch"], seg["to_epoch"]):
                out.append({"method": method, "seed": int(seed), "trial": float(seg["trial"]),
                            "epoch": x, **seg["params"]})  # fmt: skip
    if not out:
        return pd.DataFrame(columns=[*KEYS, "epoch", *hp])
    return pd.DataFrame(out).dropna(subset=["epoch"]).reset_index(drop=True)


def _follows_schedules(method: str, recs: list[dict[str, Any]]) -> bool:
    """Whether a search's trials follow schedules: its searcher's capability (trials scored on
    their own segment continue parents with hyperparameters of their own, PBT), or for a
    searcher this checkout does not know, whether a trial continued a parent with others."""
    from baselines import SEARCHERS

    if method in SEARCHERS:
        return SEARCHERS[method].scores_own_segment
    by_id = {r["trial"]: r for r in recs}
    return any(r["resume_from"] in by_id and r["params"] != by_id[r["resume_from"]]["params"]
               for r in recs)  # fmt: skip


def experiment_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The experiment part of one run's spec.json (or W&B config): methods, seeds, variants..."""
    exp = spec.get("experiment")
    return dict(exp) if isinstance(exp, Mapping) else {}


def space_of(spec: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The search space a spec.json (or search.json, or W&B config) recorded: name -> HParam
    fields ({} for runs recorded before the space was)."""
    space = spec.get("space")
    if not isinstance(space, list):
        return {}
    return {p["name"]: dict(p) for p in space if isinstance(p, Mapping) and "name" in p}


def load_spec(runs: pd.DataFrame) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The experiment's spec and search space, from the first readable spec.json of `runs`
    that has them (({}, {}) if none)."""
    spec, space = {}, {}
    for path in runs["path"]:
        rec = store.RunDir(path).read_spec() or {}
        spec, space = spec or experiment_spec(rec), space or space_of(rec)
        if spec and space:
            break
    return spec, space


def load_local(runs_dir: str | Path, experiment: str) -> Loaded:
    """runs, the single runs' metrics, the spec and the search space of one experiment."""
    runs = load_runs(runs_dir, experiment)
    spec, space = load_spec(runs)
    return Loaded(runs, load_metrics(runs[runs["trial"].isna()]), spec, space)


def mark_selected(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows whose source does not record a search's selection (W&B) marked by the store's
    rule, `experiments.store.best_trial`, as search.json records it; a single run is its own."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["seed"]), []).append(r)
    for g in groups.values():
        best = store.best_trial(r for r in g if r["trial"] is not None)
        for r in g:
            r["selected"] = r["trial"] is None or (best is not None and r is best)
    return rows


def final_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, seed): a single run as it is; for a search, the trial it selected
    (`experiments.store.best_trial`'s rule, as its search.json records), with the budget its
    trials spent (`experiments.store.spent`: each trial's own epochs and seconds)."""
    out = []
    for _, g in runs.groupby(["method", "seed"], sort=True):
        chosen = g[g["selected"] == True]  # noqa: E712 - NaN (not recorded) is not chosen
        if chosen.empty:  # e.g. W&B rows: the same rule on the rows
            best = store.best_trial(g.assign(trial=g["trial"].fillna(-1)).to_dict("records"))
            chosen = g[g["trial"].fillna(-1) == best["trial"]] if best else chosen
        ok = chosen[chosen["status"] == "ok"]
        row = ok.iloc[0].to_dict() if len(ok) else g.iloc[0].to_dict() | {"status": "none-ok"}
        row.update(n_trials=int(g["trial"].notna().sum()),
                   budget_epochs=g["spent_epochs"].sum(min_count=1),
                   budget_s=g["spent_s"].sum(min_count=1),
                   n_failed=int(g["status"].isin(["failed", "diverged"]).sum()))  # fmt: skip
        out.append(row)
    return pd.DataFrame(out)
