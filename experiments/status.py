"""How far an experiment's runs are, read from the run store only (works while a sweep runs).

    python -m experiments status cifar10-alexnet --runs-dir runs

One line per (method, seed): a single run's status (with its reason when it failed or
diverged), or a search's trials done / running / failed, the best validation loss so far, and
the SLURM job ids recorded in spec.json files. Unreadable records are named on stderr and
counted as not finished (experiments.store's read policy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .spec import SpecError
from .store import RunDir, SearchDir, Unit, best_trial, holder, walk

__all__ = ["format_status", "status"]


def _job_id(spec: dict[str, Any] | None) -> str | None:
    slurm = (spec or {}).get("slurm") or {}
    if "SLURM_ARRAY_JOB_ID" in slurm:
        return f"{slurm['SLURM_ARRAY_JOB_ID']}_{slurm.get('SLURM_ARRAY_TASK_ID', '?')}"
    return slurm.get("SLURM_JOB_ID")


def status(runs_dir: str | Path, experiment: str) -> list[dict[str, Any]]:
    """One dict per (method, seed) found under `<runs_dir>/<experiment>`."""
    if not (Path(runs_dir) / experiment).is_dir():
        raise SpecError(
            f"no runs of {experiment!r} under {runs_dir}; start them with "
            f"`python -m experiments run {experiment}` or pass --runs-dir"
        )
    out = []
    for u in walk(runs_dir, experiment):
        row = _run(u) if u.kind == "run" else _search(u)
        out.append({"method": u.place.method, "seed": u.place.seed, **row})
    return out


def _run(u: Unit) -> dict[str, Any]:
    run = RunDir(u.path)
    rec, job = run.read_result(), _job_id(run.read_spec())
    state = rec["status"] if rec is not None else "running" if holder(u.path) else "pending"
    why = (rec or {}).get("reason") or (rec or {}).get("error")
    return {"kind": "run", "status": state, "reason": why,
            "best_val_loss": (rec or {}).get("val_loss"), "jobs": [job] if job else []}  # fmt: skip


def _search(u: Unit) -> dict[str, Any]:
    """A search's counts from its journal (every ask and tell), and the results of trials that
    finished but are not told yet."""
    search = SearchDir(u.path)
    events = search.read_journal()
    asked = {int(e["id"]) for e in events if e.get("event") == "ask"}
    told = {int(e["id"]): e for e in events if e.get("event") == "tell"}
    asked |= set(u.trials)
    for t in asked - set(told):  # finished, not told yet (or no journal)
        if (rec := search.trial(t).read_result()) is not None:
            told[t] = rec
    counts = {"done": 0, "running": len(asked - set(told)), "failed": 0}
    for e in told.values():
        counts["done" if e.get("status") == "ok" else "failed"] += 1
    best = best_trial({**e, "trial": t} for t, e in told.items())
    jobs = [j for t in sorted(asked) if (j := _job_id(search.trial(t).read_spec()))]
    summary = search.read_summary() or {}
    # a grid's size, else the trial budget (None for budgets in epochs or seconds)
    budget, searcher = summary.get("budget") or {}, summary.get("searcher") or {}
    return {"kind": "search", **counts, "planned": searcher.get("size") or budget.get("trials"),
            "finished": bool(summary.get("finished")), "reason": summary.get("stop_reason"),
            "best_val_loss": best and best["val_loss"], "jobs": sorted(set(jobs))}  # fmt: skip


def format_status(rows: list[dict[str, Any]]) -> str:
    """The rows as a table, the state column as wide as its longest entry."""
    cells = []
    for r in rows:
        if r["kind"] == "run":
            state = r["status"] + (f": {r['reason']}" if r.get("reason") else "")
        else:
            of = f"/{r['planned']}" if r["planned"] else ""
            state = f"{r['done']}{of} done, {r['running']} running, {r['failed']} failed" + (
                f", finished ({r['reason']})" if r["finished"] else ""
            )
        best = r["best_val_loss"]
        best_s = f"{best:.4f}" if isinstance(best, (int, float)) else "-"
        jobs = ",".join(r["jobs"][:6]) + (" ..." if len(r["jobs"]) > 6 else "")
        cells.append((r["method"], r["seed"], state, best_s, jobs or "-"))
    w = max([len("state")] + [len(c[2]) for c in cells])
    lines = [f"{'method':<22} {'seed':>4}  {'state':<{w}} {'best val':>10}  slurm jobs"]
    lines += [f"{m:<22} {k:>4}  {st:<{w}} {b:>10}  {j}" for m, k, st, b, j in cells]
    return "\n".join(lines)
