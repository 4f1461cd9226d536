"""The pieces of `benchmarks/gpu_check.sh` that are Python (and run on CPU in the tests).

    python -m benchmarks.gpu_check data DIR [--full]      # synthetic CIFAR-10 and PTB files
    python -m benchmarks.gpu_check verify RUNS_DIR        # every result.json "ok" and finite
    python -m benchmarks.gpu_check epoch cifar10|ptb DIR  # one STN epoch, timed

`data --full` writes the real sizes: 50000 + 10000 CIFAR-10 images, and a PTB-format corpus of
a 10000-word vocabulary with about as many tokens as PTB (929k / 74k / 74k). `epoch` trains one
STN epoch of the paper experiment (`cifar10-alexnet`, `ptb-lstm`) at full size with its own
settings (no warm-up, so the epoch is STN cycles), then prints the training time per step, the
validation and test evaluation times and the peak device memory, and fails unless the losses
are finite.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

PTB_LINES = (62_000, 4_900)  # ~15 tokens a line: 930k training and 74k validation tokens
SMALL = {"cifar10": (500, 100), "ptb": (400, 40)}
EXPERIMENTS = {"cifar10": "cifar10-alexnet", "ptb": "ptb-lstm"}


def write_data(root: Path, full: bool) -> dict[str, str]:
    """Synthetic CIFAR-10 and PTB in their real formats under `root`; their data_dirs."""
    from experiments.data.synthetic import write_cifar10, write_ptb

    (n_train, n_test), (n_lines, n_eval) = (
        ((50_000, 10_000), PTB_LINES) if full else (SMALL["cifar10"], SMALL["ptb"])
    )
    cifar = write_cifar10(root / "cifar10", n_train=n_train, n_test=n_test)
    vocab = 10_000 if full else 50
    ptb = write_ptb(root / "ptb", n_lines=n_lines, vocab=vocab, n_eval_lines=n_eval)
    return {"cifar10": str(cifar), "ptb": str(ptb)}


def verify(runs: Path) -> list[str]:
    """One line per result.json under `runs`; the problems found (empty: all ok)."""
    problems, found = [], 0
    for path in sorted(runs.rglob("result.json")):
        found += 1
        rec = json.loads(path.read_text())
        name = str(path.parent.relative_to(runs))
        losses = [rec.get(k) for k in ("val_loss", "test_loss")]
        ok = rec.get("status") == "ok" and all(
            isinstance(v, (int, float)) and math.isfinite(v) for v in losses
        )
        print(f"  {'ok  ' if ok else 'FAIL'} {name}: {rec.get('status')} val {losses[0]} "
              f"test {losses[1]} {rec.get('error') or ''}")  # fmt: skip
        if not ok:
            problems.append(name)
    if not found:
        problems.append(f"no result.json under {runs}")
    return problems


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_epoch(name: str, data_dir: str, device: str, **task: Any) -> dict[str, Any]:
    """One STN epoch of the paper experiment of task `name` on `data_dir`, timed."""
    from experiments.definitions import ALL
    from experiments.objective import stn_config
    from stn.loop import train

    exp = {e.name: e for e in ALL}[EXPERIMENTS[name]]
    dev = torch.device(device)
    t0 = time.perf_counter()
    cfg_task = dataclasses.replace(exp.task, data_dir=data_dir, epochs=1, **task)
    problem = cfg_task.build(seed=0, device=dev)
    load_s = time.perf_counter() - t0
    spe = problem.steps_per_epoch()
    cfg = stn_config(exp, "stn", 0, str(dev), spe, task=cfg_task)
    cfg = dataclasses.replace(cfg, warmup_epochs=0, warmup_steps=0)
    evals: dict[str, float] = {}
    evaluate = problem.evaluate

    def timed(model, hyper_fn, split):  # the loop evaluates val and test once at the end
        _sync(dev)
        t = time.perf_counter()
        out = evaluate(model, hyper_fn, split)
        _sync(dev)
        evals[split] = evals.get(split, 0.0) + time.perf_counter() - t
        return out

    problem.evaluate = timed
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    _sync(dev)
    t = time.perf_counter()
    result = train(problem, cfg)
    _sync(dev)
    total = time.perf_counter() - t
    train_s = total - sum(evals.values())
    return {
        "experiment": exp.name,
        "device": str(dev),
        "steps": result.steps,
        "hyper_steps": result.trajectory_len,
        "load_s": round(load_s, 2),
        "train_s": round(train_s, 2),
        "ms_per_weight_step": round(1000 * train_s / max(result.steps, 1), 1),
        "val_eval_s": round(evals.get("val", math.nan), 2),
        "test_eval_s": round(evals.get("test", math.nan), 2),
        "peak_gib": round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)
        if dev.type == "cuda"
        else None,
        "status": result.status,
        "val_loss": result.val_loss,
        "test_loss": result.test_loss,
        "data": getattr(problem, "data_info", {}),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check")
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("data")
    d.add_argument("dir", type=Path)
    d.add_argument("--full", action="store_true")
    v = sub.add_parser("verify")
    v.add_argument("runs", type=Path)
    e = sub.add_parser("epoch")
    e.add_argument("task", choices=sorted(EXPERIMENTS))
    e.add_argument("dir")
    e.add_argument("--device", default="cuda")
    args = ap.parse_args(argv)
    if args.cmd == "data":
        t = time.perf_counter()
        dirs = write_data(args.dir, args.full)
        print(f"  wrote {', '.join(dirs.values())} in {time.perf_counter() - t:.1f} s")
        return 0
    if args.cmd == "verify":
        problems = verify(args.runs)
        if problems:
            print(f"  FAILED: {', '.join(problems)}")
        return 1 if problems else 0
    out = time_epoch(args.task, args.dir, args.device)
    print("  " + json.dumps(out))
    finite = all(math.isfinite(out[k]) for k in ("val_loss", "test_loss"))
    return 0 if out["status"] == "ok" and finite else 1


if __name__ == "__main__":
    sys.exit(main())
