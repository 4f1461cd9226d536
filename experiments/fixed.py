"""The fixed-hyperparameter training loop: the one loop every baseline trains with.

    result = train_fixed(problem, {"dropout0": 0.2, ...}, FixedConfig(epochs=5, lr=0.1),
                         log=print, checkpoint_path="run/checkpoint.pt")

It trains `problem.build_model(0)` (the plain network) on the problem's training batches with the
same hyperparameters for every example of a batch (`HyperBatch.fixed`), or with per-minibatch
values that follow a noise, a sinusoid or a logged schedule (Table 1 of the paper). The budget is
epochs (fractional: a run may end mid-epoch) or steps, whichever ends first; the authors'
learning-rate decay and early stopping (`stn.schedule.Plateau`) are options. After every epoch
(and at the end of the budget) it evaluates on validation and test, logs one row and saves its
complete state, so an interrupted run resumes bit-identically on CPU.

It is STN's loop's sibling (`stn.loop`): the same rows, optimiser builder, divergence rule
(`stn.config.Divergence`: a diverged run ends with status "diverged" and its reason), result
type (`stn.config.Result`: the evaluation with the best validation loss), checkpoint format
and `on_resume`.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stn import checkpoint as ckpt
from stn.config import OPTIMIZERS, Divergence, Result, make_optimizer
from stn.hyper import HyperBatch
from stn.problem import Problem, batch_size, steps_per_epoch, to_device
from stn.schedule import Plateau
from stn.space import Space

__all__ = [
    "OPTIMIZERS",
    "TRAIN_FIELDS",
    "FixedConfig",
    "steps_per_epoch",
    "train_fixed",
    "values_at",
]

# what a task config may set for both training loops (same names in stn.STNConfig)
TRAIN_FIELDS = (
    "epochs",
    "max_steps",
    "optimizer",
    "lr",
    "momentum",
    "grad_clip",
    "lr_decay",
    "decay_window",
    "patience",
    "min_lr",
    "decay_reset",
    "diverge_after",
)
Schedule = Sequence[tuple[int, Mapping[str, float]]]  # (first step, values) in step order
LOOP = "fixed"  # the checkpoint's "loop"
_RESUMABLE = ("epochs", "max_steps", "device", "seed")  # a promotion continues with its own


@dataclass(frozen=True)
class FixedConfig:
    epochs: float | None = 1.0  # budget in epochs; fractions end mid-epoch (rounded to a step)
    max_steps: int | None = None  # budget in training steps; with epochs, the earlier end wins
    optimizer: str = "sgd"  # "sgd" | "adam" | "rmsprop" (stn.config.OPTIMIZERS)
    lr: float = 0.01  # learning rate of the weights
    momentum: float = 0.9  # SGD / RMSprop momentum (ignored by adam)
    grad_clip: float | None = None  # max global gradient norm (None: no clipping)
    lr_decay: float = 1.0  # Plateau: LR multiplier when validation stops improving (1: off)
    decay_window: int = 0  # Plateau: non-monotone window in evaluations (0: off)
    patience: int = 0  # Plateau: stop after this many evaluations without a new best (0: off)
    min_lr: float = 0.0  # Plateau: stop once the LR falls below this
    decay_reset: bool = False  # Plateau: clear its history after a decay (False: the authors')
    diverge_after: int = 3  # evaluations in a row above the problem's chance loss (0: off)
    log_every: int = 0  # steps between training rows (0: evaluation rows only)
    seed: int = 0  # seeds Python, NumPy and torch at the start of a fresh run
    device: str = "cpu"  # torch device of the model and batches

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer {self.optimizer!r} unknown; valid: {OPTIMIZERS}")
        if self.epochs is None and self.max_steps is None:
            raise ValueError("give a budget: epochs or max_steps")
        if (self.epochs is not None and not 0 < self.epochs < math.inf) or (
            self.max_steps is not None and self.max_steps < 1
        ):
            raise ValueError(
                f"budget must be positive and finite: epochs={self.epochs}, steps={self.max_steps}"
            )
        if not 0 < self.lr < math.inf:
            raise ValueError(f"lr must be positive and finite, got {self.lr}")
        if self.diverge_after < 0:
            raise ValueError(f"diverge_after must be >= 0, got {self.diverge_after}")

    @classmethod
    def from_task(cls, task: Any, **overrides: Any) -> FixedConfig:
        """The task config's training settings (fields named as here), then `overrides`."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise ValueError(f"unknown FixedConfig keys {unknown}; valid: {', '.join(names)}")
        values = {n: getattr(task, n) for n in TRAIN_FIELDS if hasattr(task, n)}
        return cls(**{**values, **overrides})


def _clip(space: Space, values: Mapping[str, float]) -> dict[str, float]:
    """Values pushed back into their ranges; integer hyperparameters floored."""
    out = {}
    for p in space:
        v = min(max(float(values[p.name]), p.low), p.high)
        out[p.name] = float(math.floor(v)) if p.integer else v
    return out


def values_at(
    step: int,
    space: Space,
    base: Mapping[str, float],
    *,
    noise_std: Mapping[str, float] | None = None,
    sinusoid: Mapping[str, tuple[float, float]] | None = None,
    schedule: Schedule | None = None,
) -> dict[str, float]:
    """The hyperparameters of training step `step` (0-based).

    schedule: piecewise constant, the last entry whose step is <= `step` overrides `base`;
    sinusoid: + amplitude * sin(2 pi step / period); noise_std: + N(0, std^2) drawn from the
    global RNG (saved in checkpoints), one draw per minibatch. Results are clipped into range.
    """
    values = dict(base)
    for first, entry in schedule or ():
        if first > step:
            break
        values.update(entry)
    for name, (amplitude, period) in (sinusoid or {}).items():
        values[name] += amplitude * math.sin(2 * math.pi * step / period)
    for name, std in (noise_std or {}).items():
        values[name] += std * float(torch.randn(()))
    return _clip(space, values)


def _check_names(space: Space, what: str, names: Any) -> None:
    unknown = sorted({n for n in names or () if n not in space})
    if unknown:
        raise ValueError(f"{what}: unknown hyperparameters {unknown}; valid: {space.names}")


def train_fixed(
    problem: Problem,
    params: Mapping[str, float] | None,
    config: FixedConfig,
    *,
    log: Callable[[dict[str, Any]], None] | None = None,
    checkpoint_path: str | Path | None = None,
    noise_std: Mapping[str, float] | None = None,
    sinusoid: Mapping[str, tuple[float, float]] | None = None,
    schedule: Schedule | None = None,
    resume_from: str | Path | None = None,
    on_resume: Callable[[int], None] | None = None,
    stop_after_steps: int | None = None,
    own_best: bool = False,
) -> Result:
    """Train the plain network at fixed (or noisy / periodic / scheduled) hyperparameters.

    params: a full assignment of `problem.space` (None: the space's initial values).
    log(row): rows numbered by "row" from 0: evaluations {"kind": "eval", "step", "epoch",
        "wall_s", "val_loss", "val_metric", "test_loss", "test_metric", "lr", "hparams"} and,
        every `log_every` steps or every step when the values vary, {"kind": "train", "step",
        ..., "train_loss", "hparams"}, where "hparams" are the values step `step` (1-based) used.
    checkpoint_path: this run's checkpoint; when it exists the run resumes from it.
    resume_from: another run's checkpoint to continue from when this run has none (a Hyperband
        promotion, a PBT member): weights, optimiser (its learning rate included), plateau and
        divergence state, data position and RNG are taken over; the hyperparameters and the
        budget are this run's; the result's `spent` counts only what this run trained. When
        that checkpoint is gone or unusable (named on stderr), the run trains from scratch.
    own_best: with resume_from, the result is the best of this run's own evaluations, not
        also the parent's (PBT scores a member by how it does now; a promotion keeps its
        parent's best).
    on_resume(rows): called once before training with the rows the starting state has logged
        (0 for a fresh run or a promotion): a store keeps those and drops any logged after them.
    stop_after_steps: stop once this many steps are done in total, save the checkpoint and return
        status "interrupted" (how tests and preemption handlers cut a run).
    """
    space = problem.space
    base = space.validate(space.init() if params is None else params)
    _check_names(space, "noise_std", noise_std)
    _check_names(space, "sinusoid", sinusoid)
    _check_names(space, "schedule", [n for _, v in schedule or () for n in v])
    vary = dict(noise_std=noise_std, sinusoid=sinusoid, schedule=schedule)
    run = _Run(problem, base, config, log or (lambda row: None), checkpoint_path)
    own = ckpt.load(checkpoint_path, LOOP)
    state = own if own is not None else ckpt.load(resume_from, LOOP)
    if resume_from is not None and state is None:
        print(f"warning: no usable checkpoint at {resume_from} to continue from; training from "
              "scratch", file=sys.stderr, flush=True)  # fmt: skip
    if state is not None:
        run.load(state, promotion=own is None, own_best=own_best)
    if on_resume is not None:
        on_resume(run.st["rows"])
    if state is not None:
        ckpt.set_rng_state(state["rng"])  # last: nothing after it may draw
    del own, state
    run.train(vary if any(vary.values()) else None, stop_after_steps)
    return run.result()


class _Run:
    """The state of one fixed-hyperparameter run and its steps."""

    def __init__(self, problem: Problem, base: dict[str, float], cfg: FixedConfig, log, path):
        self.problem, self.space, self.base, self.cfg = problem, problem.space, base, cfg
        self.log_fn, self.path = log, path
        self.spe = steps_per_epoch(problem)
        by_epochs = max(1, round(cfg.epochs * self.spe)) if cfg.epochs is not None else math.inf
        self.total = min(by_epochs, cfg.max_steps if cfg.max_steps is not None else math.inf)
        ckpt.seed_everything(cfg.seed)  # a resumed run restores its RNG from the checkpoint
        self.device = torch.device(cfg.device)
        self.model = problem.build_model(0).to(self.device)
        self.opt = make_optimizer(cfg.optimizer, self.model.parameters(), cfg.lr, cfg.momentum)
        self.plateau = Plateau(
            cfg.lr_decay, cfg.decay_window, cfg.patience, cfg.min_lr, reset=cfg.decay_reset
        )
        self.divergence = Divergence(problem, cfg.diverge_after)
        # pos: batches of `epoch` already trained on; start: (step, wall_s) this run began at
        # (a promotion: its parent's); best: the best evaluation row
        self.st: dict[str, Any] = {"step": 0, "epoch": 0, "pos": 0, "rows": 0, "wall_s": 0.0,
                                   "status": None, "reason": None, "best": None,
                                   "start": (0, 0.0)}  # fmt: skip

    # --- state ---
    def save(self) -> None:
        if self.path is not None:
            state = {
                "format": ckpt.FORMAT,
                "loop": LOOP,
                "config": asdict(self.cfg),
                "model": self.model.state_dict(),
                "optimizers": {"weights": self.opt.state_dict()},
                "plateau": self.plateau.state_dict(),
                "divergence": self.divergence.state_dict(),
                "counters": dict(self.st),
                "problem": self.problem.state_dict(),
                "rng": ckpt.rng_state(),
            }
            ckpt.save_atomic(state, self.path)

    def load(self, state: dict[str, Any], promotion: bool, own_best: bool = False) -> None:
        ckpt.check_settings(state["config"], asdict(self.cfg), _RESUMABLE)
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizers"]["weights"])
        self.plateau.load_state_dict(state["plateau"])
        self.divergence.load_state_dict(state["divergence"])
        self.problem.load_state_dict(state["problem"])
        self.st.update(state["counters"])
        if self.st["status"] == "interrupted":  # cut on purpose: carry on
            self.st["status"] = None
        if promotion:  # continue with this run's budget, rows and a fresh verdict
            self.st.update(status=None, reason=None, rows=0,
                           start=(self.st["step"], self.st["wall_s"]))  # fmt: skip
            self.plateau.reason = None
            if own_best:
                self.st["best"] = None

    def result(self) -> Result:
        st, best = self.st, self.st["best"] or {}
        epochs, (step0, wall0) = st["step"] / self.spe, st["start"]
        pick = {k: best.get(k, math.nan) for k in ("val_loss", "test_loss", "val_metric",
                                                   "test_metric")}  # fmt: skip
        return Result(
            status=st["status"] or "ok",
            reason=st["reason"],
            **pick,
            metric_name=getattr(self.problem, "metric_name", "metric"),
            epochs=epochs,
            steps=st["step"],
            wall_s=st["wall_s"],
            hparams=dict(self.base),
            spent={"epochs": (st["step"] - step0) / self.spe, "seconds": st["wall_s"] - wall0},
        )

    def end(self, status: str, reason: str | None) -> None:
        if self.st["status"] is None:
            self.st["status"], self.st["reason"] = status, reason

    # --- training ---
    def train(self, vary: dict[str, Any] | None, stop_after: int | None = None) -> None:
        st, cfg = self.st, self.cfg
        t0 = time.perf_counter() - st["wall_s"]
        while st["step"] < self.total and st["status"] is None:
            finished_epoch = True
            for batch in ckpt.skip(self.problem.train_batches(st["epoch"]), st["pos"]):
                if st["step"] >= self.total:
                    finished_epoch = False
                    break
                values = values_at(st["step"], self.space, self.base, **vary) if vary else self.base
                loss = self.step(batch, values)
                why = Divergence.loss(loss, "training loss", st["step"] + 1)
                if why is not None:
                    self.end("diverged", why)
                    break
                st["step"], st["pos"] = st["step"] + 1, st["pos"] + 1
                st["wall_s"] = time.perf_counter() - t0
                if vary or (cfg.log_every and st["step"] % cfg.log_every == 0):
                    self.log({"kind": "train", "train_loss": loss, "hparams": values})
                if stop_after is not None and st["step"] >= stop_after:
                    self.end("interrupted", None)
                    break
            if st["status"] is not None:
                break
            if finished_epoch:
                st["epoch"], st["pos"] = st["epoch"] + 1, 0
            self.evaluate()
            st["wall_s"] = time.perf_counter() - t0
            self.save()
        if st["status"] in ("diverged", "interrupted"):  # where it stopped
            self.save()

    def step(self, batch: Any, values: Mapping[str, float]) -> float:
        """One SGD step at `values`; returns the training loss (not applied if not finite)."""
        batch = to_device(batch, self.device)
        n = batch_size(self.problem, batch)
        hb = HyperBatch.fixed(self.space, values, n, self.device)
        self.model.train()
        loss = self.problem.train_loss(self.model, batch, hb)
        value = loss.item()
        if not math.isfinite(value):
            return value
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        return value

    def log(self, row: dict[str, Any]) -> None:
        st = self.st
        where = {"row": st["rows"], "kind": row.pop("kind"), "step": st["step"],
                 "epoch": st["step"] / self.spe}  # fmt: skip
        st["rows"] += 1
        self.log_fn({**where, **row, "wall_s": st["wall_s"]})

    def evaluate(self) -> None:
        """Val and test passes at the base values; best record, divergence and plateau rules."""
        st, base, space, device = self.st, self.base, self.space, self.device
        hyper_fn = lambda b: HyperBatch.fixed(space, base, b, device)  # noqa: E731
        self.model.eval()
        with torch.no_grad():
            val = self.problem.evaluate(self.model, hyper_fn, "val")
            test = self.problem.evaluate(self.model, hyper_fn, "test")
        row = {"val_loss": float(val["loss"]), "val_metric": float(val["metric"]),
               "test_loss": float(test["loss"]), "test_metric": float(test["metric"])}  # fmt: skip
        self.log({"kind": "eval", **row, "lr": self.opt.param_groups[0]["lr"], "hparams": base})
        why = self.divergence.evaluation(row["val_loss"], st["step"])
        if why is not None:
            self.end("diverged", why)
        elif st["best"] is None or row["val_loss"] < st["best"]["val_loss"]:
            st["best"] = row
        if st["status"] is None and self.plateau.step(row["val_loss"], [self.opt]):
            self.end("ok", self.plateau.reason)
