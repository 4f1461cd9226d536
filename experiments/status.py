"""How far an experiment's runs are, read from the run store only (works while a sweep runs).

    python -m experiments status cifar10-alexnet --runs-dir runs

One line per (method, seed): a single run's status, or a search's trials done / running /
failed, the best validation loss so far, and the SLURM job ids recorded in spec.json files.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from .driver import JOURNAL, SUMMARY, read_journal
from .spec import SpecError

__all__ = ["format_status", "status"]

_SEED = re.compile(r"^seed(\d+)$")
_TRIAL = re.compile(r"^trial(\d+)$")


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None  # missing, or being replaced right now: report it as not finished


def _job_id(spec: dict[str, Any] | None) -> str | None:
    slurm = (spec or {}).get("slurm") or {}
    if "SLURM_ARRAY_JOB_ID" in slurm:
        return f"{slurm['SLURM_ARRAY_JOB_ID']}_{slurm.get('SLURM_ARRAY_TASK_ID', '?')}"
    return slurm.get("SLURM_JOB_ID")


def _run_state(folder: Path) -> tuple[str, float | None, str | None]:
    """(status, val_loss, SLURM job id) of one run folder; "running" if started, not done."""
    spec, result = _read(folder / "spec.json"), _read(folder / "result.json")
    if result is not None:
        val = result.get("val_loss")
        return result.get("status", "unknown"), val, _job_id(spec)
    return "running", None, _job_id(spec)  # or queued: asked, its job not started yet


def status(runs_dir: str | Path, experiment: str) -> list[dict[str, Any]]:
    """One dict per (method, seed) found under `<runs_dir>/<experiment>`."""
    exp_dir = Path(runs_dir) / experiment
    if not exp_dir.is_dir():
        raise SpecError(
            f"no runs of {experiment!r} under {runs_dir}; start them with "
            f"`python -m experiments run {experiment}` or pass --runs-dir"
        )
    rows = []
    for method_dir in sorted(p for p in exp_dir.iterdir() if p.is_dir()):
        seeds = [(int(m[1]), p) for p in method_dir.iterdir() if (m := _SEED.match(p.name))]
        for seed, folder in sorted(seeds):
            rows.append({"method": method_dir.name, "seed": seed, **_unit(folder)})
    return rows


def _asked(journal: Path) -> set[int]:
    """Trial ids the searcher proposed (queued jobs have no folder yet)."""
    return {int(e["id"]) for e in read_journal(journal) if e.get("event") == "ask"}


def _unit(folder: Path) -> dict[str, Any]:
    names = {p.name for p in folder.iterdir() if p.is_dir() and _TRIAL.match(p.name)}
    names |= {f"trial{i}" for i in _asked(folder / JOURNAL)}
    trials = [folder / n for n in names]
    search = _read(folder / SUMMARY)
    if not trials and search is None and not (folder / JOURNAL).exists():
        state, val, job = _run_state(folder)
        return {"kind": "run", "status": state, "best_val_loss": val, "jobs": [job] if job else []}
    counts = {"done": 0, "running": 0, "failed": 0}
    best, jobs = None, []
    for t in trials:
        state, val, job = _run_state(t)
        if job:
            jobs.append(job)
        if state == "ok":
            counts["done"] += 1
            if isinstance(val, (int, float)) and math.isfinite(val):
                best = val if best is None else min(best, val)
        elif state in ("failed", "diverged"):
            counts["failed"] += 1
        else:
            counts["running"] += 1
    search = search or {}
    # a grid's size, else the trial budget (None for budgets in epochs or seconds)
    budget, searcher = search.get("budget") or {}, search.get("searcher") or {}
    planned = searcher.get("size") or budget.get("trials")
    finished = bool(search.get("finished"))
    return {
        "kind": "search",
        **counts,
        "planned": planned,
        "finished": finished,
        "best_val_loss": best,
        "jobs": sorted(set(jobs)),
    }


def format_status(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'method':<22} {'seed':>4}  {'state':<40} {'best val':>10}  slurm jobs"]
    for r in rows:
        if r["kind"] == "run":
            state = r["status"]
        else:
            of = f"/{r['planned']}" if r["planned"] else ""
            state = f"{r['done']}{of} done, {r['running']} running, {r['failed']} failed" + (
                ", finished" if r["finished"] else ""
            )
        best = r["best_val_loss"]
        best_s = f"{best:.4f}" if isinstance(best, (int, float)) else "-"
        jobs = ",".join(r["jobs"][:6]) + (" ..." if len(r["jobs"]) > 6 else "")
        lines.append(f"{r['method']:<22} {r['seed']:>4}  {state:<40} {best_s:>10}  {jobs or '-'}")
    return "\n".join(lines)
