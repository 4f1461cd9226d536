"""Batched per-example augmentation against torchvision's per-image transforms.

Measures images per second at batch 128, 32x32 (CIFAR-10 shape), in one process:
(a) `stn.augment.color_jitter` + `stn.augment.cutout` on the whole batch, one strength per
    example;
(b) torchvision.transforms.v2.functional adjust_brightness / contrast / saturation / hue applied
    image by image with per-image factors, then a per-image cutout by tensor slicing.
Both see the same per-example strengths. Repeats of (a) and (b) alternate, so load from other
processes falls on both alike; the median time of the repeats is reported, wall clock (the
images per second and the ratio) and CPU time of this process. Target: ratio >= 5.

    python -m benchmarks.bench_augment [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor

from benchmarks.common import Clock, fmt, median
from stn import augment

BATCH, SIZE, TARGET = 128, 32, 5.0


def _strengths(gen: torch.Generator) -> dict[str, Tensor]:
    """Per-example strengths in the ranges a CIFAR-10 STN explores."""
    u = torch.rand(6, BATCH, generator=gen)
    return {
        "brightness": 0.5 * u[0],
        "contrast": 0.5 * u[1],
        "saturation": 0.5 * u[2],
        "hue": 0.25 * u[3],
        "length": torch.floor(4 + 13 * u[4]),  # 4..16
        "holes": torch.floor(1 + 2 * u[5]),  # 1..2
    }


def batched(x: Tensor, s: dict[str, Tensor]) -> Tensor:
    y = augment.color_jitter(x, s["brightness"], s["contrast"], s["saturation"], s["hue"])
    return augment.cutout(y, s["length"], s["holes"])


def _factor(s: float) -> float:
    lo = max(0.0, 1.0 - s)
    return lo + (1.0 + s - lo) * float(torch.rand(()))


def per_image(x: Tensor, s: dict[str, Tensor]) -> Tensor:
    """The per-image pipeline a data loader would run, one image at a time."""
    rows = zip(*(s[k].tolist() for k in ("brightness", "contrast", "saturation", "hue")))
    lengths, holes = s["length"].long().tolist(), s["holes"].long().tolist()
    out = []
    for img, (b, c, sat, h), n, k in zip(x, rows, lengths, holes):
        img = TF.adjust_brightness(img, _factor(b))
        img = TF.adjust_contrast(img, _factor(c))
        img = TF.adjust_saturation(img, _factor(sat))
        img = TF.adjust_hue(img, (2 * float(torch.rand(())) - 1) * h)
        for _ in range(k):  # cutout by slicing; adjust_* returned a new tensor
            cy, cx = (int(v) for v in torch.randint(0, SIZE, (2,)))
            top, left = max(cy - n // 2, 0), max(cx - n // 2, 0)
            img[:, top : cy - n // 2 + n, left : cx - n // 2 + n] = 0
        out.append(img)
    return torch.stack(out)


def run(quick: bool = False, threads: int | None = None) -> dict:
    """Images per second of both pipelines, their ratio and the target (>= 5).

    threads: torch intra-op threads for this measurement only (restored after); None keeps
    torch's setting. One thread is what each data-loader worker runs the per-image path with.
    """
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _measure(quick)
    finally:
        torch.set_num_threads(before)


def _measure(quick: bool) -> dict:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(BATCH, 3, SIZE, SIZE, generator=gen)
    s = _strengths(gen)
    warmup, repeats = (2, 5) if quick else (5, 21)
    for _ in range(warmup):
        batched(x, s), per_image(x, s)
    times: dict[str, list[tuple[float, float]]] = {"batched": [], "per_image": []}
    for _ in range(repeats):  # alternate, so both see the same background load
        for name, pipeline in (("batched", batched), ("per_image", per_image)):
            with Clock() as c:  # wall, and CPU seconds of this process
                pipeline(x, s)
            times[name].append((c.wall, c.cpu))
    med = {k: median(w for w, _ in v) for k, v in times.items()}
    cpu = {k: median(c for _, c in v) for k, v in times.items()}
    ratio = med["per_image"] / med["batched"]
    return {
        "batch": BATCH,
        "size": SIZE,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "batched_ms": round(1e3 * med["batched"], 3),
        "per_image_ms": round(1e3 * med["per_image"], 3),
        "batched_images_per_s": round(BATCH / med["batched"], 1),
        "per_image_images_per_s": round(BATCH / med["per_image"], 1),
        "ratio": round(ratio, 2),
        "target_ratio": TARGET,
        "meets_target": ratio >= TARGET,
        # CPU time is immune to other processes taking the cores; with one thread it is what
        # the wall time would be on an idle machine (with more, it counts every thread)
        "batched_cpu_ms": round(1e3 * cpu["batched"], 3),
        "per_image_cpu_ms": round(1e3 * cpu["per_image"], 3),
        "cpu_ratio": round(cpu["per_image"] / cpu["batched"], 2),
    }


def render(r: dict[str, Any]) -> list[str]:
    """A Markdown table of both pipelines; the ratio against the target."""
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


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_augment")
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    print(json.dumps(run(quick=args.quick, threads=args.threads), indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
