"""The cost of STN: training throughput and peak memory of STN and Delta-STN vs plain training.

For the digits MLP (real digits), the paper's AlexNet at CIFAR-10 shape (random uint8 images,
batch 128) and the 2-layer 650-unit PTB LSTM (random tokens of a 10k vocabulary, batch 40,
BPTT 70), each built by its task in `experiments.tasks`:

- plain: `experiments.fixed.train_fixed` on the plain network (n_hyper=0), one SGD step a batch;
- stn: `stn.train` with the default cycle (T_train=2 weight steps, T_val=1 hyper step);
- delta-stn: `stn.train` with Delta-STN's preset (`STNConfig.delta_stn()`: 5 + 1, linearised).

Both loops run unmodified; a log callback stamps the clock at every logged step (plain) or hyper
step (STN), so an interval is one plain step or one whole STN cycle. The modes alternate within
each repeat (same background load), the first interval of every run is a warm-up and is dropped,
and the median interval is kept. The STN/plain time per training example is compared with the
arithmetic bound of DESIGN.md: plain step 3F, STN weight step 6F, hyper step 4F, so
bound = (6 T_train + 4 T_val) / (3 T_train), 2.67 for 2 + 1; the target is the measured ratio
within 15% of it (MLP, AlexNet) or 50% (LSTM, whose plain version runs PyTorch's fused kernel).
Delta-STN's bound counts a weight step as a plain step (3F) and a response step (5F), so
(8 T_train + 4 T_val) / (3 T_train), 2.93 for its 5 + 1 (docs/benchmarks.md derives it); its
target is its cost per training example within 20% of STN's measured one (MLP, AlexNet) or 50%
(LSTM).

Peak memory: each (network, mode) trains a few steps in a fresh subprocess; the growth of its
peak resident set (CPU) or `torch.cuda.max_memory_allocated` (GPU) is compared with 2x plain,
and broken down into parameters, gradients, optimiser state and tensors saved for backward.

    python -m benchmarks.bench_stn_cost [--quick] [--only mlp,lstm] [--device cuda] [--amp]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from benchmarks import common

__all__ = ["NETWORKS", "TARGETS", "bound", "delta_bound", "render", "run"]

NETWORKS = ("mlp", "alexnet", "lstm")
MODES = ("plain", "stn", "delta-stn")
TARGETS = {"mlp": 0.15, "alexnet": 0.15, "lstm": 0.50}  # allowed excess over the bound
DELTA_TARGETS = {"mlp": 0.20, "alexnet": 0.20, "lstm": 0.50}  # Delta-STN's excess over STN
MEMORY_TARGET = 0.20  # STN peak within 20% of 2x the plain peak


def bound(train_steps: int, val_steps: int) -> float:
    """STN time per training example / plain: (6 T_train + 4 T_val) F over 3 T_train F."""
    return (6 * train_steps + 4 * val_steps) / (3 * train_steps)


def delta_bound(train_steps: int, val_steps: int) -> float:
    """Delta-STN time per training example / plain: (8 T_train + 4 T_val) F over 3 T_train F.

    A weight step is an ordinary step at the current hyperparameters, where the hypernet input
    is zero and the network is its plain path (3F), and a response step (5F): the primal
    forward (F), the tangent W x_dot + (V_w h)(U x) (2F) and its backward to x_dot and U (2F);
    a response trained without linearisation costs the same (two-path forward 2F, backward to
    x through both paths 2F, U's gradient F). The hyper step is STN's (4F).
    """
    return (8 * train_steps + 4 * val_steps) / (3 * train_steps)


# --- the three networks on random or small real data -------------------------------------------
@dataclass(frozen=True)
class Sizes:
    """How much of one network is measured."""

    repeats: int  # alternations of the modes
    intervals: dict[str, int]  # measured intervals per run and mode (after one warm-up)


# a builder: (quick, device) -> (task config, problem of `steps` training batches, label)
Builder = Callable[[bool, str], tuple[Any, Callable[[int], Any], str]]


def _digits(quick: bool, device: str):
    from experiments.tasks import DigitsTask

    task = DigitsTask()  # 1078 training images, 17 batches of 64: epochs roll over, no matter
    return task, lambda steps: task.build(0, device), "digits MLP 64-128-128-10, batch 64"


def _alexnet(quick: bool, device: str):
    from experiments.tasks import Cifar10Task
    from experiments.tasks.cifar10 import Cifar10Problem

    width, batch = (0.25, 32) if quick else (1.0, 128)
    task = Cifar10Task(width=width, batch=batch, eval_batch=batch)

    def problem(steps: int) -> Cifar10Problem:
        gen = torch.Generator().manual_seed(0)

        def split(n: int):
            x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)
            return x.to(device), torch.randint(0, 10, (n,), generator=gen).to(device)

        splits = {"train": split(batch * (steps + 1)), "val": split(2 * batch),
                  "test": split(batch)}  # fmt: skip
        return Cifar10Problem(task, splits, 0, device)

    return task, problem, f"AlexNet width {width}, batch {batch}, 32x32 random images"


def _lstm(quick: bool, device: str):
    from experiments.data.ptb import Corpus
    from experiments.tasks import PTBTask
    from experiments.tasks.ptb import PTBProblem

    hidden, batch, bptt, vocab = (128, 10, 20, 1000) if quick else (650, 40, 70, 10000)
    task = PTBTask(emb=hidden, hidden=hidden, batch=batch, bptt=bptt, eval_batch=batch)

    def problem(steps: int) -> PTBProblem:
        gen = torch.Generator().manual_seed(0)
        tokens = lambda n: torch.randint(0, vocab, (n,), generator=gen)  # noqa: E731
        corpus = Corpus(
            vocab=[f"w{i}" for i in range(vocab)],
            train=tokens(batch * (bptt * (steps + 1) + 1)),
            valid=tokens(batch * (2 * bptt + 1)),
            test=tokens(batch * (bptt + 1)),
        )
        return PTBProblem(task, corpus, 0, device)

    label = f"2-layer LSTM {hidden} units, vocab {vocab}, batch {batch}, BPTT {bptt}"
    return task, problem, label


BUILDERS: dict[str, Builder] = {"mlp": _digits, "alexnet": _alexnet, "lstm": _lstm}


def sizes(net: str, quick: bool, device: str) -> Sizes:
    if net == "mlp":  # milliseconds a step, at the mercy of the machine's noise: many samples
        if quick:
            return Sizes(2, {"plain": 8, "stn": 4, "delta-stn": 2})
        return Sizes(9, {"plain": 20, "stn": 10, "delta-stn": 4})
    if quick:
        return Sizes(2, {"plain": 2, "stn": 1, "delta-stn": 1})
    return Sizes(3, {"plain": 3, "stn": 2, "delta-stn": 1})


# --- the loops, stamped ------------------------------------------------------------------------
class _Autocast:
    """A problem whose objectives and evaluation run under torch.autocast (mixed precision)."""

    def __init__(self, problem: Any, device: str, dtype: torch.dtype):
        self._p, self._ctx = problem, lambda: torch.autocast(torch.device(device).type, dtype)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._p, name)

    def train_loss(self, model, batch, hb):
        with self._ctx():
            return self._p.train_loss(model, batch, hb)

    def val_loss(self, model, batch, hb):
        with self._ctx():
            return self._p.val_loss(model, batch, hb)

    def evaluate(self, model, hyper_fn, split):
        with self._ctx():
            return self._p.evaluate(model, hyper_fn, split)


def mode_configs(task: Any, device: str) -> dict[str, Any]:
    """The loop settings of every mode, with the task's training settings (`TRAIN_FIELDS`):
    plain, a FixedConfig whose step budget `train_mode` sets per run; stn and delta-stn, an
    STNConfig (its default cycle, or Delta-STN's preset) without an epoch or step budget."""
    from experiments.fixed import TRAIN_FIELDS, FixedConfig
    from stn.loop import STNConfig

    names = [k for k in TRAIN_FIELDS if k not in ("epochs", "max_steps") and hasattr(task, k)]
    kw = {**{k: getattr(task, k) for k in names}, "epochs": 10**6, "device": device, "seed": 0}
    return {
        "plain": FixedConfig.from_task(task, epochs=None, max_steps=1, log_every=1),
        "stn": STNConfig(**kw),
        "delta-stn": STNConfig.delta_stn(**kw),
    }


def batches_per_unit(cfg: Any) -> int:
    """Training batches of one logged unit: a plain step, or an STN cycle's weight steps."""
    return getattr(cfg, "train_steps", 1)


def train_mode(problem: Any, cfg: Any, units: int, log=None) -> None:
    """Train `units` logged units (plain steps or STN cycles) of a mode with its real loop."""
    from experiments.fixed import FixedConfig, train_fixed
    from stn.loop import train

    if isinstance(cfg, FixedConfig):  # a budget past the stop: no end-of-budget evaluation
        cfg = dataclasses.replace(cfg, max_steps=units + 1)
        train_fixed(problem, None, cfg, log=log, stop_after_steps=units)
    else:
        train(problem, cfg, log=log, stop_after_steps=batches_per_unit(cfg) * units)


def _intervals(problem, mode: str, cfg: Any, n: int, device: str) -> list[tuple[float, float]]:
    """(wall, CPU) seconds of n units after one warm-up unit (model built, first kernels run,
    buffers allocated)."""
    stamps: list[tuple[float, float]] = []
    kind = "train" if mode == "plain" else "hyper"

    def log(row: dict[str, Any]) -> None:
        if row.get("kind") == kind:
            stamps.append(common.stamp(device))

    train_mode(problem, cfg, n + 1, log)
    pairs = list(zip(stamps, stamps[1:]))  # the unit before the first stamp warmed up
    if len(pairs) < n:
        raise RuntimeError(f"{mode}: only {len(pairs)} of {n} intervals (did training diverge?)")
    return [(b[0] - a[0], b[1] - a[1]) for a, b in pairs]


def measure_time(net: str, quick: bool, device: str, amp: bool) -> dict[str, Any]:
    """Throughput of each mode and the STN/plain ratios, for one network."""
    sz = sizes(net, quick, device)
    task, make_problem, label = BUILDERS[net](quick, device)
    cfgs = mode_configs(task, device)
    # one epoch holds the longest run
    steps = max((sz.intervals[m] + 1) * batches_per_unit(cfgs[m]) for m in MODES)
    problem = make_problem(steps)
    if amp:
        problem = _Autocast(problem, device, torch.bfloat16)
    modes = MODES
    samples: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
    for _ in range(sz.repeats):  # alternate, so every mode sees the same background load
        for m in modes:
            samples[m] += _intervals(problem, m, cfgs[m], sz.intervals[m], device)
    batch = problem.batch_size(next(iter(problem.train_batches(0))))
    out: dict[str, Any] = {"network": label, "batch": batch, "modes": {}}
    for m in modes:
        cfg, per = cfgs[m], batches_per_unit(cfgs[m])  # training batches per interval
        wall = common.median(w for w, _ in samples[m]) / per
        cpu = common.median(c for _, c in samples[m]) / per
        row = {"s_per_batch": wall, "cpu_s_per_batch": cpu, "examples_per_s": batch / wall,
               "samples": len(samples[m])}  # fmt: skip
        if m != "plain":
            row["cycle"] = f"{cfg.train_steps}+{cfg.val_steps}"
            row["linearize"] = cfg.linearize
        out["modes"][m] = row
    plain = out["modes"]["plain"]
    # one thread's CPU time is the work done, whatever else runs on the machine; with more
    # threads it counts their spinning too, and on a GPU only wall time means much
    cpu = torch.device(device).type == "cpu" and torch.get_num_threads() == 1
    judged = "cpu_ratio" if cpu else "ratio"
    for m in modes[1:]:
        row, cfg = out["modes"][m], cfgs[m]
        row["ratio"] = row["s_per_batch"] / plain["s_per_batch"]
        row["cpu_ratio"] = row["cpu_s_per_batch"] / plain["cpu_s_per_batch"]
        row["judged_on"] = "cpu" if cpu else "wall"
        if m == "stn":
            row["bound"] = bound(cfg.train_steps, cfg.val_steps)
            row["target"] = row["bound"] * (1 + TARGETS[net])
        else:  # Delta-STN: its own bound, and a target relative to STN's measured cost
            row["bound"] = delta_bound(cfg.train_steps, cfg.val_steps)
            row["over_stn"] = row[judged] / out["modes"]["stn"][judged]
            row["target"] = out["modes"]["stn"][judged] * (1 + DELTA_TARGETS[net])
        row["within_target"] = row[judged] <= row["target"]
    return out


# --- peak memory -------------------------------------------------------------------------------
def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def saved_for_backward(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor]) -> dict:
    """Bytes of the tensors one forward saves for backward: parameters (no new memory),
    copies shaped like stacked [plain; hyper] weights, and the rest (activations)."""
    params = {p.data_ptr() for p in model.parameters()}
    stacked = {(2 * p.shape[0], *p.shape[1:]) for p in model.parameters() if p.dim() > 1}
    seen: dict[int, tuple[str, int]] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        shape = tuple(t.shape)
        copy = shape in stacked or shape[::-1] in stacked  # linear saves the weight transposed
        kind = "params" if ptr in params else "stacked" if copy else "acts"
        seen.setdefault(ptr, (kind, t.untyped_storage().nbytes()))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss_fn()
    out = {"params": 0, "stacked": 0, "acts": 0}
    for kind, n in seen.values():
        out[kind] += n
    return {"weight_copies_mb": out["stacked"] / 2**20, "activations_mb": out["acts"] / 2**20}


def _components(problem: Any, task: Any, mode: str, device: str) -> dict[str, float]:
    """Parameters, gradients, optimiser state and saved tensors of one mode, MiB."""
    from stn.hyper import Hyper, HyperBatch

    n = 0 if mode == "plain" else len(problem.space)
    model = problem.build_model(n).train()
    p_mb = _nbytes(model.parameters()) / 2**20
    batch = next(iter(problem.train_batches(0)))
    b = problem.batch_size(batch)
    if n:
        hb = Hyper(problem.space, centred=mode == "delta-stn").to(device).batch(b)
    else:
        hb = HyperBatch.fixed(problem.space, problem.space.init(), b, device)
    saved = saved_for_backward(model, lambda: problem.train_loss(model, batch, hb))
    momentum = task.momentum > 0  # SGD keeps one buffer per parameter
    return {"params_mb": p_mb, "grads_mb": p_mb, "optimizer_mb": p_mb if momentum else 0.0,
            **saved}  # fmt: skip


def memory_child(net: str, mode: str, quick: bool, device: str, amp: bool) -> dict[str, Any]:
    """In a fresh process: the peak memory growth of training a few units of `mode`.

    A first short run pages in the code and kernels it needs (hundreds of MiB of libtorch
    would otherwise count as training memory); its memory is then given back to the system
    (malloc_trim) and the peak mark reset before the measured run.
    """
    import gc

    task, make_problem, _ = BUILDERS[net](quick, device)
    cfg, problem = mode_configs(task, device)[mode], make_problem(12)
    if amp:
        problem = _Autocast(problem, device, torch.bfloat16)
    train_mode(problem, cfg, 1)
    gc.collect()
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device) / 2**20
    else:
        common.trim_heap()
        base, reset = common.rss_mb(), common.peak_rss_reset()
    train_mode(problem, cfg, 1)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else common.peak_rss_mb()
    out = {"peak_growth_mb": peak - base, "measure": "cuda allocator" if cuda else "peak RSS"}
    if not cuda:
        out["peak_reset"] = reset
    return out | _components(problem, task, mode, device)


def measure_memory(net: str, quick: bool, device: str, amp: bool, threads: int) -> dict:
    """Peak memory growth of plain, STN and Delta-STN training, each in its own process."""
    rows = {}
    for mode in MODES:
        cmd = [sys.executable, "-m", "benchmarks.bench_stn_cost", "--memory-child", net, mode,
               "--device", device, "--threads", str(threads)]  # fmt: skip
        cmd += ["--quick"] * quick + ["--amp"] * amp
        done = common.run_checked(cmd, f"memory of {net}/{mode}")
        rows[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    plain = rows["plain"]["peak_growth_mb"]
    for mode, r in rows.items():
        known = r["params_mb"] + r["grads_mb"] + r["optimizer_mb"] + r["activations_mb"]
        r["unexplained_mb"] = r["peak_growth_mb"] - known - r["weight_copies_mb"]
        if mode != "plain":
            r["ratio"] = r["peak_growth_mb"] / plain
        if mode == "stn":  # the target is STN's
            r["bound"] = 2.0
            r["within_target"] = r["ratio"] <= 2.0 * (1 + MEMORY_TARGET)
    return rows


# --- entry points ------------------------------------------------------------------------------
def run(
    quick: bool = False,
    only: tuple[str, ...] = NETWORKS,
    device: str = "cpu",
    amp: bool = False,
    memory: bool = True,
) -> dict[str, Any]:
    """Throughput (and peak memory) of plain / STN / Delta-STN training for each network."""
    unknown = [n for n in only if n not in NETWORKS]
    if unknown:
        raise ValueError(f"unknown networks {unknown}; valid: {', '.join(NETWORKS)}")
    out: dict[str, Any] = {"device": device, "amp": "bf16" if amp else None, "networks": {}}
    for net in only:
        row = measure_time(net, quick, device, amp)
        if memory:
            row["memory"] = measure_memory(net, quick, device, amp, torch.get_num_threads())
        out["networks"][net] = row
    return out


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_stn_cost")
    ap.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    ap.add_argument("--only", default=",".join(NETWORKS), help=f"of {', '.join(NETWORKS)}")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--memory-child", nargs=2, metavar=("NET", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        net, mode = args.memory_child
        print(json.dumps(memory_child(net, mode, args.quick, args.device, args.amp)))
        return
    only = tuple(n.strip() for n in args.only.split(",") if n.strip())
    try:
        res = run(args.quick, only, args.device, args.amp, memory=not args.no_memory)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])


def _pcts(targets: dict[str, float]) -> str:
    """{"mlp": 0.15, "alexnet": 0.15, "lstm": 0.5} -> "15% (mlp, alexnet), 50% (lstm)"."""
    by: dict[float, list[str]] = {}
    for net, t in targets.items():
        by.setdefault(t, []).append(net)
    return ", ".join(f"{t:.0%} ({', '.join(nets)})" for t, nets in by.items())


def render(r: dict[str, Any]) -> list[str]:
    """Markdown tables: time per batch and ratios, then peak memory."""
    f = common.fmt
    amp = f", {r['amp']} autocast" if r.get("amp") else ""
    lines = [
        f"Device {r['device']}{amp}. Ratios are time per training example over plain "
        "(wall clock, and process CPU time); / STN: Delta-STN's judged ratio over STN's. Bounds: "
        "STN (6 T_train + 4 T_val) / (3 T_train), target within "
        f"{_pcts(TARGETS)} of it; Delta-STN (8 T_train + 4 T_val) / (3 T_train), target within "
        f"{_pcts(DELTA_TARGETS)} of STN's measured ratio.",
        "",
        "| network | mode | cycle | s / batch | examples/s | ratio | CPU ratio | / STN | bound |"
        " target | within |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    nets = {n: r["networks"][n] for n in NETWORKS if n in r["networks"]}  # stored sorted
    for net, row in nets.items():
        for mode, m in ((k, row["modes"][k]) for k in MODES if k in row["modes"]):
            if "skipped" in m:  # results of an older version
                lines.append(f"| {net} | {mode} | not measured: {m['skipped']} ||||||||")
                continue
            b = m.get("bound", m.get("bound_estimate"))  # an older version's estimate
            within = m.get("within_target")
            lines.append(
                f"| {net} | {mode} | {m.get('cycle', '1')} | {f(m['s_per_batch'])} | "
                f"{f(m['examples_per_s'])} | {f(m.get('ratio'))} | {f(m.get('cpu_ratio'))} | "
                f"{f(m.get('over_stn'))} | "
                f"{f(b)}{'' if 'bound' in m or b is None else ' (est.)'} | "
                f"{f(m.get('target'))} | {'-' if within is None else f(within)} |"
            )
    judged = {row["modes"].get("stn", {}).get("judged_on") for row in nets.values()} - {None}
    on = " and ".join(sorted("one thread's CPU time" if j == "cpu" else "wall" for j in judged))
    lines += ["", "Networks: " + "; ".join(f"{n}: {row['network']}" for n, row in nets.items())]
    lines[-1] += f". Targets judged on the ratio of {on}." if on else "."
    mem = {n: row["memory"] for n, row in nets.items() if "memory" in row}
    if mem:
        lines += [
            "",
            "| network | mode | peak growth MiB | / plain | bound | within 20% | params+grads+opt "
            "| saved activations | weight copies | rest |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for net, modes in mem.items():
            for mode, m in ((k, modes[k]) for k in MODES if k in modes):
                state = m["params_mb"] + m["grads_mb"] + m["optimizer_mb"]
                within = m.get("within_target") if mode == "stn" else None
                lines.append(
                    f"| {net} | {mode} | {f(m['peak_growth_mb'])} | {f(m.get('ratio'))} | "
                    f"{f(m.get('bound') if mode == 'stn' else None)} | "
                    f"{'-' if within is None else f(within)} | "
                    f"{f(state)} | {f(m['activations_mb'])} | {f(m['weight_copies_mb'])} | "
                    f"{f(m.get('unexplained_mb'))} |"
                )
        kind = next(iter(next(iter(mem.values())).values()))["measure"]
        lines += ["", f"Peak memory: growth of the {kind} while training, in a fresh process."]
    return lines
