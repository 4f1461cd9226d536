"""The STN / Delta-STN training loop: `train(problem, STNConfig(...)) -> STNResult`.

One cycle = `train_steps` weight steps on training batches (model in train mode, hyperparameters
perturbed per example) then `val_steps` hyper steps on the validation stream (eval mode; only the
hyperparameters and their scales are differentiated, never the weights). A warm-up of weight
steps comes first. Every hyper step logs a trajectory row; every `evaluate_every` epochs the
model is evaluated on 'val' and 'test' at the current (unperturbed) hyperparameters.

Delta-STN (`delta=True`, PAPER.md): the hypernetwork input is centred, the scalings V start at
zero, and each weight step updates the ordinary weights at the current hyperparameters, then the
response parameters (hyper_*, scaling*) at perturbed ones, optionally through the linearised
response f(x; h=0) + J_h f . h (stn/delta.py). Settings and result: stn/config.py.

The full state is checkpointed (stn/checkpoint.py); a run that finds its checkpoint resumes
and ends bit-identical on CPU to an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import checkpoint as ckpt
from .config import ConfigError, STNConfig, STNResult
from .delta import Linearized, at_centre, frozen
from .hyper import Hyper
from .problem import Problem
from .schedule import Plateau

__all__ = ["ConfigError", "STNConfig", "STNResult", "train"]

LogFn = Callable[[dict[str, Any]], None]
# what `train` needs of a problem; metric_name, batch_size, state_dict and load_state_dict of
# `stn.problem.Problem` are optional here ("metric", the first tensor's length, stateless)
_REQUIRED = tuple(
    "space build_model train_batches val_batches train_loss val_loss evaluate".split()
)
_RESUMABLE = ("epochs", "max_steps", "checkpoint_every_steps", "device")  # may change on resume


def train(
    problem: Problem,
    config: STNConfig | None = None,
    *,
    log: LogFn | None = None,
    checkpoint_path: str | Path | None = None,
    stop_after_steps: int | None = None,
) -> STNResult:
    """Train `problem`'s model with STN (or Delta-STN) and return the result record.

    log: called with every row (kind "hyper" per hyper step, kind "eval" per evaluation);
        rows are numbered by "row": a run resumed from a checkpoint logs again from the
        checkpoint's row on, so a store drops its rows from the first re-logged "row" on.
    checkpoint_path: state saved there every `checkpoint_every_steps` steps and at the end;
        if the file exists the run resumes from it (a finished run just returns its result).
    stop_after_steps: stop once this many weight steps are done in total, save the checkpoint
        and return status "interrupted" (how tests and preemption handlers cut a run).
    """
    cfg = config if config is not None else STNConfig()
    if not isinstance(cfg, STNConfig):
        raise ConfigError(f"config must be an STNConfig, got {type(cfg).__name__}")
    missing = [m for m in _REQUIRED if not hasattr(problem, m)]
    if missing:
        raise ConfigError(f"problem lacks {', '.join(missing)} (see stn.problem.Problem)")
    if torch.device(cfg.device).type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {cfg.device!r} asked for, but CUDA is not available here")
    run = _Run(problem, cfg, log)
    state = ckpt.load(checkpoint_path)
    if state is not None:
        run.load(state)

    def save() -> None:
        if checkpoint_path is not None:
            ckpt.save_atomic(run.state_dict(), checkpoint_path)

    while run.status is None and run.epoch < cfg.epochs:
        for batch in run.train_iter():
            run.pos += 1
            if not math.isfinite(run.weight_step(batch)):
                run.status = "diverged"
                break
            if not run.warming_up():
                run.cycle += 1
            if run.cycle == cfg.train_steps:
                run.cycle = 0
                if not all(math.isfinite(run.hyper_step()) for _ in range(cfg.val_steps)):
                    run.status = "diverged"
                    break
            if cfg.checkpoint_every_steps and run.step % cfg.checkpoint_every_steps == 0:
                save()
            if cfg.max_steps is not None and run.step >= cfg.max_steps:
                run.status = "ok"
                break
            if stop_after_steps is not None and run.step >= stop_after_steps:
                save()
                return run.result("interrupted")
        else:  # the epoch ran to its end
            run.train_it = None
            if (run.epoch + 1) % cfg.evaluate_every == 0 and run.evaluate(schedule=True):
                run.status = "ok"  # a stopping rule fired (patience or min_lr)
            run.epoch, run.pos = run.epoch + 1, 0

    if run.status in (None, "ok") and run.last_eval_step != run.step:
        run.evaluate(schedule=False)  # the end state is always evaluated once
    if run.status is None:
        run.status = "ok"
    save()
    return run.result(run.status)


def _optimizer(
    name: str,
    params: list[Tensor],
    lr: float,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    fused: bool = False,
) -> torch.optim.Optimizer:
    # fused: SGD's and Adam's one-kernel step, where PyTorch has it (floating tensors on CPU or
    # CUDA); it rounds differently from the per-tensor loop, so only Delta-STN's weights use it
    # (two optimiser steps a batch; 2-4% of a Delta-STN step of the digits MLP).
    kw = {"fused": True} if fused and all(_fusable(p) for p in params) else {}
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, **kw
        )
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, **kw)
    return torch.optim.RMSprop(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def _fusable(p: Tensor) -> bool:
    return p.is_floating_point() and p.device.type in ("cpu", "cuda")


def _is_response(name: str) -> bool:
    """Response parameters of the STN layers: hyper_weight*, hyper_bias*, scaling* (V)."""
    return any(part.startswith(("hyper_", "scaling")) for part in name.split("."))


def _to(batch: Any, device: torch.device) -> Any:
    """Move the tensors of a batch (a tensor, or tuples / lists / dicts of them) to `device`."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    return batch


@contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """The model's parameters require no gradient inside the block (restored after).

    A hyper step's forward runs in it: autograd then records nothing for the weights, so no
    weight gradient is computed, not even by a custom autograd Function (the STN LSTM's
    recurrence), whose backward sees only that an input requires grad, not whether the caller
    asked for it; and no tensor is saved only for a weight gradient. On the PTB LSTM it took
    a tenth off a hyper step (CPU).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class _Run:
    """The state of one run and its steps; `train` drives it top to bottom."""

    def __init__(self, problem: Problem, cfg: STNConfig, log: LogFn | None):
        self.problem, self.cfg, self.log_fn = problem, cfg, log
        self.device = torch.device(cfg.device)
        ckpt.seed_everything(cfg.seed)  # model initialisation and perturbations follow the seed
        self.model = problem.build_model(len(problem.space)).to(self.device)
        self.hyper = Hyper(
            problem.space, cfg.sigma_init, centred=cfg.delta, anchored=cfg.anchored
        ).to(self.device)
        named = list(self.model.named_parameters())
        response = [p for n, p in named if _is_response(n)]
        ordinary = [p for n, p in named if not _is_response(n)]
        if cfg.delta:
            if not response:
                raise ConfigError("delta=True needs STN layers (no hyper_*/scaling* parameters)")
            with torch.no_grad():
                for n, p in named:
                    if any(part.startswith("scaling") for part in n.split(".")):
                        p.zero_()  # V = 0: the network starts as its ordinary weights
            self.groups = {"ordinary": ordinary, "response": response}
        else:
            self.groups = {"weights": ordinary + response}
        self.opts = {
            k: _optimizer(
                cfg.optimizer, ps, cfg.lr, cfg.momentum, cfg.nesterov, cfg.weight_decay, cfg.delta
            )
            for k, ps in self.groups.items()
        }
        self.opts["hyper"] = _optimizer(cfg.hyper_optimizer, [self.hyper.raw], cfg.hyper_lr)
        self.opts["scale"] = _optimizer(cfg.hyper_optimizer, [self.hyper.raw_scale], cfg.scale_lr)
        self.linearized = Linearized(self.model, frozen=ordinary) if cfg.linearize else None
        self.plateau = Plateau(
            cfg.lr_decay, cfg.decay_window, cfg.patience, cfg.min_lr, reset=cfg.decay_reset
        )
        # counters: weight steps, hyper steps, epoch, batches consumed in it, weight steps in the
        # current cycle, the validation stream's pass and position, the last evaluated step
        self.step = self.hyper_steps = self.epoch = self.pos = self.cycle = 0
        self.val_epoch = self.val_pos = self.rows = 0  # rows: log rows written so far
        self.last_eval_step = -1
        self.status: str | None = None
        self.best: dict[str, Any] | None = None
        self.train_it = self.val_it = None
        self.elapsed, self.t0 = 0.0, time.perf_counter()

    # --- data ---
    def train_iter(self):
        if self.train_it is None:
            self.train_it = ckpt.skip(self.problem.train_batches(self.epoch), self.pos)
        return self.train_it

    def next_val(self) -> Any:
        if self.val_it is None:
            self.val_it = ckpt.skip(self.problem.val_batches(self.val_epoch), self.val_pos)
        for _ in range(2):
            try:
                batch = next(self.val_it)
                self.val_pos += 1
                return _to(batch, self.device)
            except StopIteration:  # one pass of the stream is over: start the next
                self.val_epoch, self.val_pos = self.val_epoch + 1, 0
                self.val_it = iter(self.problem.val_batches(self.val_epoch))
        raise ConfigError("problem.val_batches yielded no batch")

    def _batch_size(self, batch: Any) -> int:
        if hasattr(self.problem, "batch_size"):
            return self.problem.batch_size(batch)
        while isinstance(batch, (tuple, list, dict)):  # the first tensor's leading dimension
            batch = next(iter(batch.values() if isinstance(batch, dict) else batch))
        return len(batch)

    def warming_up(self) -> bool:
        return self.epoch < self.cfg.warmup_epochs or self.step <= self.cfg.warmup_steps

    # --- steps ---
    def _descend(self, group: str, loss: Tensor) -> float:
        """One optimiser step of a parameter group on `loss`; returns the loss value."""
        value = loss.item()
        if not math.isfinite(value):
            return value
        params = self.groups[group]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for p, g in zip(params, grads):
            p.grad = g
        if self.cfg.grad_clip is not None:
            nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        self.opts[group].step()
        for p in params:
            p.grad = None
        return value

    def weight_step(self, batch: Any) -> float:
        batch, train_loss = _to(batch, self.device), self.problem.train_loss
        n = self._batch_size(batch)
        self.model.train()
        self.step += 1
        # the training loss is never differentiated w.r.t. lambda; Delta-STN's ordinary weights
        # see the current lambda (centred input h = 0), STN's weights a perturbed one
        if not self.cfg.delta:
            with torch.no_grad():
                hb = self.hyper.batch(n, perturb=True)
            return self._descend("weights", train_loss(self.model, batch, hb))
        # each step records only what its own gradient needs: the other group is frozen
        hb = self.hyper.current_batch(n)  # the same between hyper steps: built once
        with at_centre(), frozen(self.groups["response"]):  # h = 0 at lambda: plain paths alone
            loss = train_loss(self.model, batch, hb)
        value = self._descend("ordinary", loss)
        with torch.no_grad():
            hb = self.hyper.batch(n, perturb=True)
        net = self.model
        if self.linearized is not None:
            net, self.linearized.hb = self.linearized, hb
        with frozen(self.groups["ordinary"]):
            loss = train_loss(net, batch, hb)  # at lambda~
        response = self._descend("response", loss)
        return value if math.isfinite(response) else response

    def hyper_step(self) -> float:
        cfg, hyper = self.cfg, self.hyper
        batch = self.next_val()
        self.model.eval()
        hb = hyper.batch(self._batch_size(batch), perturb=cfg.perturbs_in_val)
        with _frozen(self.model):
            loss = self.problem.val_loss(self.model, batch, hb)
        value = loss.item()
        if not math.isfinite(value):
            return value
        params = [hyper.raw, hyper.raw_scale] if cfg.tune_scales else [hyper.raw]
        objective = loss - cfg.entropy_weight * hyper.entropy() if cfg.tune_scales else loss
        # w.r.t. the hyperparameters only; the weights were frozen, so nothing of them is in
        # the graph: no weight gradient, no tensors saved for one
        grads = torch.autograd.grad(objective, params, allow_unused=True)
        if grads[0] is None:
            raise ConfigError(
                "the validation loss does not depend on the hyperparameters: "
                "pass hb.net_input to the model's STN layers"
            )
        for p, g, name in zip(params, grads, ("hyper", "scale")):
            p.grad = g
            self.opts[name].step()
            p.grad = None
        self.hyper_steps += 1
        self._log({"kind": "hyper", "hyper_step": self.hyper_steps, "val_batch_loss": value})
        return value

    def evaluate(self, schedule: bool) -> bool:
        """Full 'val' and 'test' passes; updates the best record; True when a rule says stop."""
        self.model.eval()
        with torch.no_grad():
            hyper_fn = lambda b: self.hyper.batch(b, perturb=False)  # noqa: E731
            val = self.problem.evaluate(self.model, hyper_fn, "val")
            test = self.problem.evaluate(self.model, hyper_fn, "test")
        self.last_eval_step = self.step
        rec = {
            "val_loss": float(val["loss"]),
            "val_metric": float(val["metric"]),
            "test_loss": float(test["loss"]),
            "test_metric": float(test["metric"]),
        }
        lr = self.opts["weights" if "weights" in self.opts else "ordinary"].param_groups[0]["lr"]
        self._log({"kind": "eval", **rec, "lr": lr})
        if not math.isfinite(rec["val_loss"]):
            self.status = "diverged"
            return False
        if self.best is None or rec["val_loss"] < self.best["val_loss"]:
            self.best = {
                **rec,
                "step": self.step,
                "epoch": self.row_epoch(),
                "hparams": self.hyper.current(),
                "scales": self.hyper.scales(),
                "model": _clone(self.model.state_dict()),
                "hyper": _clone(self.hyper.state_dict()),
            }
        weight_opts = [self.opts[k] for k in self.groups]
        return schedule and self.plateau.step(rec["val_loss"], weight_opts)

    def _log(self, row: dict[str, Any]) -> None:
        self.rows += 1
        if self.log_fn is None:
            return
        row = {"row": self.rows - 1, "step": self.step, "epoch": self.row_epoch(), **row}
        row.update({f"hp/{k}": v for k, v in self.hyper.current().items()})
        row.update({f"sigma/{k}": v for k, v in self.hyper.scales().items()})
        self.log_fn({**row, "wall_s": self.wall_s()})

    def row_epoch(self) -> int:
        """The epoch the current moment belongs to (0-based; after the last one ends, it)."""
        return self.epoch if self.pos or not self.epoch else self.epoch - 1

    def wall_s(self) -> float:
        return self.elapsed + time.perf_counter() - self.t0

    # --- state ---
    _COUNTERS = tuple(
        "step hyper_steps epoch pos cycle val_epoch val_pos rows last_eval_step status".split()
    )

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": 1,
            "config": asdict(self.cfg),
            "model": self.model.state_dict(),
            "hyper": self.hyper.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.opts.items()},
            "plateau": self.plateau.state_dict(),
            "counters": {k: getattr(self, k) for k in self._COUNTERS},
            "wall_s": self.wall_s(),
            "problem": self.problem.state_dict() if hasattr(self.problem, "state_dict") else {},
            "best": self.best,
            "rng": ckpt.rng_state(),
        }

    def load(self, state: dict[str, Any]) -> None:
        saved = state["config"]
        changed = [
            k for k, v in asdict(self.cfg).items() if k not in _RESUMABLE and saved.get(k) != v
        ]
        if changed:
            raise ConfigError(
                f"checkpoint was written with other settings: {', '.join(changed)}; "
                "use the same config or another checkpoint_path"
            )
        self.model.load_state_dict(state["model"])
        self.hyper.load_state_dict(state["hyper"])
        for k, o in self.opts.items():
            o.load_state_dict(state["optimizers"][k])
        self.plateau.load_state_dict(state["plateau"])
        for k, v in state["counters"].items():
            setattr(self, k, v)
        self.elapsed, self.t0 = state["wall_s"], time.perf_counter()
        if hasattr(self.problem, "load_state_dict"):
            self.problem.load_state_dict(state["problem"])
        self.best = state["best"]
        # Recreate the data iterators where they were, before restoring the RNG: whatever
        # creating or skipping them draws then cannot shift the random stream of the steps.
        if self.status is None and self.epoch < self.cfg.epochs:
            self.train_iter()
        if self.val_pos:
            self.val_it = ckpt.skip(self.problem.val_batches(self.val_epoch), self.val_pos)
        ckpt.set_rng_state(state["rng"])

    def result(self, status: str) -> STNResult:
        final, scales = self.hyper.current(), self.hyper.scales()
        best = self.best or {}
        if best and status != "interrupted":
            self.model.load_state_dict(best["model"])  # best weights with their own lambda
            self.hyper.load_state_dict(best["hyper"])
        nan = math.nan
        return STNResult(
            status=status,
            val_loss=best.get("val_loss", nan),
            test_loss=best.get("test_loss", nan),
            val_metric=best.get("val_metric", nan),
            test_metric=best.get("test_metric", nan),
            metric_name=getattr(self.problem, "metric_name", "metric"),
            epochs=self.epoch + (self.pos > 0),
            steps=self.step,
            wall_s=self.wall_s(),
            hparams=best.get("hparams", final),
            final_hparams=final,
            final_scales=scales,
            trajectory_len=self.hyper_steps,
            best_step=best.get("step"),
            model=self.model,
            hyper=self.hyper,
        )


def _clone(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}
