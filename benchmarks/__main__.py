"""`python -m benchmarks` (`make bench`): every benchmark in one process, side by side.

    python -m benchmarks [--quick] [--only stn_cost,augment,...] [--threads N]
                         [--device cuda] [--amp] [--networks alexnet,lstm] [--demo]

Prints each result as a Markdown table, merges them into `benchmarks/results/<machine>.json`
and regenerates the tables of `docs/benchmarks.md` from every machine's results file.
A benchmark that fails is recorded as such and the others still run (exit code 1).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks import common

ROOT = Path(__file__).resolve().parent.parent
# each benchmark's module: its `run` measures, its `render` makes the Markdown of a result
MODULES = {
    "stn_cost": "benchmarks.bench_stn_cost",
    "augment": "benchmarks.bench_augment",
    "bo": "benchmarks.bench_bo",
    "searchers": "benchmarks.bench_searchers",
    "hpo": "benchmarks.bench_hpo",
    "report": "benchmarks.bench_report",
    "demo": "benchmarks.bench_demo",
}
BENCHMARKS = tuple(MODULES)


def _runner(name: str, args: argparse.Namespace) -> Callable[[], dict[str, Any]]:
    """The call of one benchmark with the options that concern it (its module is imported
    here, not at start: a benchmark whose module fails to import fails alone)."""
    m, q = importlib.import_module(MODULES[name]), args.quick
    if name == "stn_cost":
        nets = tuple(args.networks.split(",")) if args.networks else m.NETWORKS
        return lambda: m.run(q, nets, args.device, args.amp, memory=not args.no_memory)
    if name == "hpo":
        return lambda: m.run(q, args.runs_dir)
    if name == "report":
        return lambda: m.run(q, demo=args.demo)
    return lambda: m.run(q)


def _render(name: str, r: dict[str, Any]) -> list[str]:
    """A result as Markdown: its module's `render`, or the error of a failed run."""
    if "error" in r:
        return [f"Failed: {r['error']}"]
    return importlib.import_module(MODULES[name]).render(r)


RENDERERS = {name: functools.partial(_render, name) for name in MODULES}


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes and few repeats")
    ap.add_argument("--only", default=None, help=f"comma-separated, of {', '.join(BENCHMARKS)}")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--device", default="cpu", help="stn_cost: cpu or cuda")
    ap.add_argument("--amp", action="store_true", help="stn_cost: bf16 autocast")
    ap.add_argument("--networks", default=None, help="stn_cost: e.g. alexnet,lstm")
    ap.add_argument("--no-memory", action="store_true", help="stn_cost: skip peak memory")
    ap.add_argument("--runs-dir", default="runs", help="hpo: the run store to read")
    ap.add_argument("--demo", action="store_true", help="report: also time `make demo`")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    return ap


def _check(ap: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[str, ...]:
    names = BENCHMARKS if args.only is None else tuple(args.only.split(","))
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown or not names:
        ap.exit(2, f"error: unknown benchmarks {unknown}; valid: {', '.join(BENCHMARKS)}\n")
    if args.threads is not None and args.threads < 1:
        ap.exit(2, f"error: --threads must be >= 1, got {args.threads}\n")
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        ap.exit(2, f"error: --device {args.device}: CUDA is not available on this machine\n")
    return names


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    try:
        args = ap.parse_args(argv)
        names = _check(ap, args)
        torch.device(args.device)
    except RuntimeError as e:  # an unparsable --device
        print(f"error: --device: {e}", file=sys.stderr)
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)  # the entry point's choice, for every benchmark
    info, results, failed = common.machine_info(), {}, []
    print(f"machine: {common.machine_slug(info)} ({info['cpu']}, {info['cores']} cores, "
          f"GPU {info['gpu'] or 'none'}, {info['torch_threads']} torch threads)")  # fmt: skip
    for name in names:
        print(f"\n## {name}", flush=True)
        t0 = time.perf_counter()
        try:
            result = _runner(name, args)()
        except Exception as e:  # one benchmark's failure is reported, the others still run
            traceback.print_exc()
            failed.append(name)
            result = {"error": f"{type(e).__name__}: {e}"}
        results[name] = common.entry(result, args.quick, time.perf_counter() - t0)
        print("\n".join(RENDERERS.get(name, common.generic)(result)), flush=True)
    path = common.save_results(results, args.results, info)
    common.write_docs(args.doc, args.results, RENDERERS)
    print(f"\nresults: {path}\ntables:  {args.doc}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
