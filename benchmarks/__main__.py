"""`python -m benchmarks` (`make bench`): every benchmark in one process, side by side.

    python -m benchmarks [--quick] [--only stn_cost,augment,...] [--threads N]
                         [--device cuda] [--amp] [--networks alexnet,lstm] [--demo]

Prints each result as a Markdown table, merges them into `benchmarks/results/<machine>.json`
and regenerates the tables of `docs/benchmarks.md` from every machine's results file.
A benchmark that fails is recorded as such and the others still run (exit code 1).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks import bench_hpo, bench_report, bench_stn_cost, common
from benchmarks.common import fmt

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ("stn_cost", "augment", "bo", "hpo", "report")


def _runner(name: str, args: argparse.Namespace) -> Callable[[], dict[str, Any]]:
    """The call of one benchmark with the options that concern it (imports are lazy: a
    benchmark whose module is missing fails alone)."""
    q = args.quick
    if name == "stn_cost":
        from benchmarks import bench_stn_cost as m

        nets = tuple(args.networks.split(",")) if args.networks else m.NETWORKS
        return lambda: m.run(q, nets, args.device, args.amp, memory=not args.no_memory)
    if name == "augment":
        from benchmarks import bench_augment as m

        return lambda: m.run(q)
    if name == "bo":
        from benchmarks import bench_bo as m

        return lambda: m.run(q)
    if name == "hpo":
        from benchmarks import bench_hpo as m

        return lambda: m.run(q, args.runs_dir)
    from benchmarks import bench_report as m

    return lambda: m.run(q, demo=args.demo)


def _render_augment(r: dict[str, Any]) -> list[str]:
    return [
        "| pipeline | ms / batch of 128 | images/s | CPU ms |",
        "|---|---|---|---|",
        f"| batched per-example (stn.augment) | {fmt(r['batched_ms'])} | "
        f"{fmt(r['batched_images_per_s'])} | {fmt(r['batched_cpu_ms'])} |",
        f"| torchvision, per image | {fmt(r['per_image_ms'])} | "
        f"{fmt(r['per_image_images_per_s'])} | {fmt(r['per_image_cpu_ms'])} |",
        "",
        f"Ratio {fmt(r['ratio'])}x (CPU time {fmt(r['cpu_ratio'])}x); target >= "
        f"{fmt(r['target_ratio'])}x: {'met' if r['meets_target'] else 'NOT met'} "
        f"({r['threads']} thread{'s' * (r['threads'] != 1)}, median of {r['repeats']}).",
    ]


def _render_bo(r: dict[str, Any]) -> list[str]:
    lines = ["| function | minimum | random: median best | BO: median best |", "|---|---|---|---|"]
    for name, f in r["functions"].items():
        lines.append(f"| {name} | {fmt(f['minimum'])} | {fmt(f['random']['median_best'])} | "
                     f"{fmt(f['bo']['median_best'])} |")  # fmt: skip
    ask = r["ask_seconds_100obs_15d"]
    lines += ["", f"{r['seeds']} seeds, {r['evaluations']} evaluations. One BO ask with 100 "
              f"observations in 15 dimensions: {fmt(ask)} s (one thread; "
              f"{fmt(r['ask_seconds_100obs_15d_default_threads'])} s with the default threads); "
              f"target < {fmt(r['target_ask_seconds'])} s."]  # fmt: skip
    return lines


def _error_or(render: Callable[[dict[str, Any]], list[str]]):
    def safe(r: dict[str, Any]) -> list[str]:
        return [f"Failed: {r['error']}"] if "error" in r else render(r)

    return safe


RENDERERS = {
    "stn_cost": _error_or(bench_stn_cost.render),
    "augment": _error_or(_render_augment),
    "bo": _error_or(_render_bo),
    "hpo": _error_or(bench_hpo.render),
    "report": _error_or(bench_report.render),
}


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
