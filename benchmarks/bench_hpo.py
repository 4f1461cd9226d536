"""HPO efficiency on digits-mlp: best test loss against compute spent, for every method.

Read from a run store (default `runs/`, what `make demo` writes; or a reduced sweep this
benchmark runs itself with the experiments CLI when the store has no digits-mlp runs):

- a single run (stn, delta-stn): its evaluation rows, each with the epochs trained and the
  wall-clock seconds so far; the curve is the test loss at the best validation loss so far;
- a search (fixed, grid, random, bo, hyperband): its trials in the order they finished (the
  search journal's "tell" events, with the epochs and seconds each trial spent); the curve is
  the test loss of the trial with the best validation loss so far, the same selection rule.

Headline: for each baseline and seed, the compute STN needs to reach (at or below) the final test
loss of that baseline, as a fraction of the compute the baseline spent (epochs and seconds; an
STN epoch costs more than a plain one, so the seconds are the fairer axis). The median over the
seeds where STN got there, and in how many it did.

    python -m benchmarks.bench_hpo [--runs-dir runs] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import common
from experiments.spec import STN_METHODS
from experiments.store import RunDir, SearchDir, finite, walk

__all__ = ["curves", "headline", "render", "run"]

EXPERIMENT = "digits-mlp"
Point = tuple[float, float, float]  # (epochs, seconds, test loss at the best validation loss)


def _best_so_far(events: list[tuple[float, float, float, float]]) -> list[Point]:
    """(epochs, seconds, val, test) in compute order -> curve points where the pick changes."""
    out: list[Point] = []
    best_val = math.inf
    for epochs, seconds, val, test in events:
        if finite(val) and finite(test) and val < best_val:
            best_val = val
            out.append((epochs, seconds, test))
    return out


def single_curve(run_dir: Path) -> tuple[list[Point], float, float]:
    """A single run's curve from its eval rows; total epochs and seconds from its result."""
    rows = [r for r in RunDir(run_dir).metrics() if r.get("kind") == "eval"]
    events = [(float(r.get("epoch", 0)), float(r.get("wall_s", 0)), r.get("val_loss"),
               r.get("test_loss")) for r in rows]  # fmt: skip
    res = RunDir(run_dir).read_result() or {}
    total_e = float(res.get("epochs") or (events[-1][0] if events else 0.0))
    total_s = float(res.get("wall_s") or (events[-1][1] if events else 0.0))
    return _best_so_far(events), total_e, total_s


def search_curve(seed_dir: Path) -> tuple[list[Point], float, float]:
    """A search's curve over its trials in the order they finished (its journal's tells, which
    hold each trial's own epochs and seconds); its total compute."""
    search = SearchDir(seed_dir)
    tells = [e for e in search.read_journal() if e.get("event") == "tell"]
    if not tells:  # no journal: trial order, each trial's own record
        summary = search.read_summary() or {"trials": []}
        tells = [{"id": t["trial"], **t.get("spent", {})} for t in summary["trials"]]
    events, epochs, seconds = [], 0.0, 0.0
    for t in tells:
        epochs += float(t.get("epochs") or 0.0)
        seconds += float(t.get("seconds") or 0.0)
        res = search.trial(int(t["id"])).read_result() or {}
        ok = res.get("status") == "ok"
        events.append((epochs, seconds, res.get("val_loss") if ok else None, res.get("test_loss")))
    return _best_so_far(events), epochs, seconds


def curves(runs_dir: Path, experiment: str = EXPERIMENT) -> dict[str, dict[int, dict[str, Any]]]:
    """{method: {seed: {"points": [(epochs, seconds, test)], "epochs", "seconds", "final"}}}."""
    exp_dir = Path(runs_dir) / experiment
    if not exp_dir.is_dir():
        raise FileNotFoundError(f"no runs of {experiment} under {runs_dir}")
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for unit in walk(runs_dir, experiment):
        if unit.kind == "run" and RunDir(unit.path).done:
            points, e, s = single_curve(unit.path)
        elif unit.kind == "search" and SearchDir(unit.path).summary_file.exists():
            points, e, s = search_curve(unit.path)
        else:  # unfinished
            continue
        final = points[-1][2] if points else None
        out.setdefault(unit.place.method, {})[unit.place.seed] = {
            "points": points, "epochs": e, "seconds": s, "final": final}  # fmt: skip
    if not out:
        raise FileNotFoundError(f"no finished runs of {experiment} under {runs_dir}")
    return out


def _reach(points: list[Point], target: float) -> Point | None:
    return next((p for p in points if p[2] <= target), None)


def headline(c: dict[str, dict[int, dict[str, Any]]], method: str = "stn") -> dict[str, Any]:
    """Per baseline: STN's compute to match its final test loss / the baseline's compute."""
    out = {}
    for base in sorted(m for m in c if m not in STN_METHODS):
        fe, fs, n = [], [], 0
        for seed, b in c[base].items():
            s = c.get(method, {}).get(seed)
            if s is None or b["final"] is None:
                continue
            n += 1
            hit = _reach(s["points"], b["final"])
            if hit is not None:
                fe.append(hit[0] / b["epochs"] if b["epochs"] else math.nan)
                fs.append(hit[1] / b["seconds"] if b["seconds"] else math.nan)
        out[base] = {
            "seeds": n,
            "reached": len(fe),
            "epochs_fraction": common.median(fe) if fe else None,
            "seconds_fraction": common.median(fs) if fs else None,
        }
    return out


def summary(c: dict[str, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    """Per method: mean final test loss and mean compute over its seeds."""
    out = {}
    for m, seeds in c.items():
        finals = [r["final"] for r in seeds.values() if r["final"] is not None]
        out[m] = {
            "seeds": len(seeds),
            "final_test_loss": sum(finals) / len(finals) if finals else None,
            "epochs": sum(r["epochs"] for r in seeds.values()) / len(seeds),
            "seconds": sum(r["seconds"] for r in seeds.values()) / len(seeds),
        }
    return out


def reduced_sweep(runs_dir: Path, quick: bool) -> None:
    """The smoke sweep of digits-mlp (every method, one seed), in-process (debug launcher);
    the full mode trains longer: 4-epoch runs, 12 epochs per search."""
    cmd = [sys.executable, "-m", "experiments", "run", EXPERIMENT, "--smoke",
           "--launcher", "debug", "--runs-dir", str(runs_dir)]  # fmt: skip
    if not quick:
        for kv in ("task.epochs=4", "budget.epochs=12", "task.hidden=64"):
            cmd += ["--set", kv]
    common.run_checked(cmd, "the reduced sweep")


def run(quick: bool = False, runs_dir: str | Path = "runs") -> dict[str, Any]:
    """HPO efficiency from `runs_dir` (or a reduced sweep when it has no digits-mlp runs)."""
    source = Path(runs_dir)
    with tempfile.TemporaryDirectory() as tmp:
        if not (source / EXPERIMENT).is_dir():
            source = Path(tmp)
            reduced_sweep(source, quick)
            label = "reduced sweep (smoke settings)" + ("" if quick else ", 4-epoch runs")
        else:
            label = f"run store {runs_dir}"
        c = curves(source)
    out = {"source": label, "experiment": EXPERIMENT, "methods": summary(c)}
    out["stn_vs_baselines"] = headline(c, "stn") if "stn" in c else {}
    out["delta_stn_vs_baselines"] = headline(c, "delta-stn") if "delta-stn" in c else {}
    out["curves"] = {m: {str(k): r["points"] for k, r in seeds.items()} for m, seeds in c.items()}
    return out


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_hpo")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs-dir", default="runs")
    args = ap.parse_args(argv)
    res = run(args.quick, args.runs_dir)
    res.pop("curves")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])


def render(r: dict[str, Any]) -> list[str]:
    """Markdown tables: every method's final test loss and compute; the headline."""
    f = common.fmt
    lines = [
        f"Source: {r['source']}.",
        "",
        "| method | seeds | final test loss | epochs | seconds |",
        "|---|---|---|---|---|",
    ]
    for m, s in r["methods"].items():
        lines.append(f"| {m} | {s['seeds']} | {f(s['final_test_loss'])} | {f(s['epochs'])} | "
                     f"{f(s['seconds'])} |")  # fmt: skip
    for key, who in (("stn_vs_baselines", "STN"), ("delta_stn_vs_baselines", "Delta-STN")):
        if not r.get(key):
            continue
        lines += [
            "",
            f"Compute {who} needs to reach each baseline's final test loss, as a fraction of the "
            "baseline's (median over the seeds where it does):",
            "",
            "| baseline | epochs fraction | seconds fraction | seeds reached |",
            "|---|---|---|---|",
        ]
        for b, h in r[key].items():
            lines.append(f"| {b} | {f(h['epochs_fraction'])} | {f(h['seconds_fraction'])} | "
                         f"{h['reached']} / {h['seeds']} |")  # fmt: skip
    return lines
