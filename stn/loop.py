"""The STN / Delta-STN training loop: `train(problem, STNConfig(...)) -> STNResult`.

One cycle = `train_steps` weight steps on training batches (model in train mode, hyperparameters
perturbed per example) then `val_steps` hyper steps on the validation stream (eval mode; only the
hyperparameters and their scales are differentiated, never the weights). A warm-up of weight
steps comes first. Every hyper step logs a trajectory row; every `evaluate_every` epochs the
model is evaluated on 'val' and 'test' at the current (unperturbed) hyperparameters.

This loop and the fixed-hyperparameter one (`experiments.fixed`) are one family: the same
`Problem`, rows (`"row"`, `"kind"`, `"step"`, fractional `"epoch"`, `"wall_s"`, `"hparams"`),
optimiser builder, divergence rule and result type (stn/config.py), checkpoint format
(stn/checkpoint.py), and `on_resume`.

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
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import checkpoint as ckpt
from .config import ConfigError, Divergence, STNConfig, STNResult, make_optimizer
from .delta import Linearized, at_centre, frozen
from .hyper import Hyper
from .problem import Problem, batch_size, steps_per_epoch, to_device
from .schedule import Plateau

__all__ = ["ConfigError", "STNConfig", "STNResult", "train"]

LogFn = Callable[[dict[str, Any]], None]
# what `train` needs of a problem; metric_name, batch_size, state_dict and load_state_dict of
# `stn.problem.Problem` are optional here ("metric", the first tensor's length, stateless)
_REQUIRED = tuple(
    "space build_model train_batches val_batches train_loss val_loss evaluate".split()
)
_RESUMABLE = ("epochs", "max_steps", "checkpoint_every_steps", "device")  # may change on resume
LOOP = "stn"  # the checkpoint's "loop"


def train(
    problem: Problem,
    config: STNConfig | None = None,
    *,
    log: LogFn | None = None,
    checkpoint_path: str | Path | None = None,
    on_resume: Callable[[int], None] | None = None,
    stop_after_steps: int | None = None,
) -> STNResult:
    """Train `problem`'s model with STN (or Delta-STN) and return the result record.

    log: called with every row (kind "hyper" per hyper step, kind "eval" per evaluation),
        numbered by "row" from 0.
    checkpoint_path: state saved there at the end of every epoch, every
        `checkpoint_every_steps` steps and at the end; if the file exists the run resumes from
        it (a finished run just returns its result).
    on_resume(rows): called once before training with the number of rows the starting state
        has logged (0 for a fresh run): a store keeps those and drops any logged after them.
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
    state = ckpt.load(checkpoint_path, LOOP)
    if state is not None:
        run.load(state)
    if on_resume is not None:
        on_resume(run.rows)
    if run.status is not None:  # it had finished: its result as it was, nothing trained or saved
        return run.result(run.status)

    def save() -> None:
        if checkpoint_path is not None:
            ckpt.save_atomic(run.state_dict(), checkpoint_path)

    while run.status is None and run.epoch < cfg.epochs:
        for batch in run.train_iter():
            run.pos += 1
            why = Divergence.loss(run.weight_step(batch), "training loss", run.step)
            if why is None and not run.warming_up():
                run.cycle += 1
            if why is None and run.cycle == cfg.train_steps:
                run.cycle = 0
                for _ in range(cfg.val_steps):
                    why = Divergence.loss(run.hyper_step(), "hyper-step loss", run.step)
                    if why is not None:
                        break
            if why is not None:
                run.end("diverged", why)
                break
            if cfg.checkpoint_every_steps and run.step % cfg.checkpoint_every_steps == 0:
                save()
            if cfg.max_steps is not None and run.step >= cfg.max_steps:
                run.end("ok", None)
                break
            if stop_after_steps is not None and run.step >= stop_after_steps:
                save()
                return run.result("interrupted")
        else:  # the epoch ran to its end
            run.train_it, run.epoch, run.pos = None, run.epoch + 1, 0
            if run.epoch % cfg.evaluate_every == 0:
                run.evaluate(schedule=True)  # a stopping rule or divergence may end the run
            save()

    if run.status in (None, "ok") and run.last_eval_step != run.step:
        run.evaluate(schedule=False)  # the end state is always evaluated once
    run.end("ok", None)  # unless it ended earlier
    if cfg.final_hparams == "last" and run.best is not None and run.final is None:
        run.final = run.best_at_last()
    run.elapsed, run.t0 = run.wall_s(), None  # the clock stops: saved and returned alike
    save()
    return run.result(run.status)


def _is_response(name: str) -> bool:
    """Response parameters of the STN layers: hyper_weight*, hyper_bias*, scaling* (V)."""
    return any(part.startswith(("hyper_", "scaling")) for part in name.split("."))


class _Run:
    """The state of one run and its steps; `train` drives it top to bottom."""

    def __init__(self, problem: Problem, cfg: STNConfig, log: LogFn | None):
        self.problem, self.cfg, self.log_fn = problem, cfg, log
        self.device = torch.device(cfg.device)
        self.spe = steps_per_epoch(problem)  # counted before seeding: counting may draw
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
            k: make_optimizer(cfg.optimizer, ps, cfg.lr, cfg.momentum, fused=cfg.delta)
            for k, ps in self.groups.items()
        }
        self.opts["hyper"] = make_optimizer(cfg.hyper_optimizer, [self.hyper.raw], cfg.hyper_lr)
        self.opts["scale"] = make_optimizer(
            cfg.hyper_optimizer, [self.hyper.raw_scale], cfg.scale_lr
        )
        self.linearized = Linearized(self.model, frozen=ordinary) if cfg.linearize else None
        self.plateau = Plateau(
            cfg.lr_decay, cfg.decay_window, cfg.patience, cfg.min_lr, reset=cfg.decay_reset
        )
        self.divergence = Divergence(problem, cfg.diverge_after)
        # counters: weight steps, hyper steps, epoch, batches consumed in it, weight steps in the
        # current cycle, the validation stream's pass and position, the last evaluated step
        self.step = self.hyper_steps = self.epoch = self.pos = self.cycle = 0
        self.val_epoch = self.val_pos = self.rows = 0  # rows: log rows written so far
        self.last_eval_step = -1
        self.status: str | None = None  # None while training; "ok" | "diverged" once it ends
        self.reason: str | None = None  # why it ended early
        self.best: dict[str, Any] | None = None
        self.final: dict[str, Any] | None = None  # final_hparams="last": the best weights, again
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
                return to_device(batch, self.device)
            except StopIteration:  # one pass of the stream is over: start the next
                self.val_epoch, self.val_pos = self.val_epoch + 1, 0
                self.val_it = iter(self.problem.val_batches(self.val_epoch))
        raise ConfigError("problem.val_batches yielded no batch")

    def _batch_size(self, batch: Any) -> int:
        return batch_size(self.problem, batch)

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
        batch, train_loss = to_device(batch, self.device), self.problem.train_loss
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
        hb = hyper.batch(self._batch_size(batch), perturb=cfg.tune_scales)
        # The weights frozen while the forward runs: autograd records nothing for them, so no
        # weight gradient is computed, not even by a custom autograd Function (the STN LSTM's
        # recurrence), whose backward sees only that an input requires grad; and no tensor is
        # saved only for a weight gradient. On the PTB LSTM it took a tenth off a hyper step.
        with frozen(self.model.parameters()):
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

    def evaluate(self, schedule: bool) -> None:
        """Full 'val' and 'test' passes; the best record; the plateau and divergence rules,
        which may end the run."""
        rec = self.measure()
        self.last_eval_step = self.step
        lr = self.opts["weights" if "weights" in self.opts else "ordinary"].param_groups[0]["lr"]
        self._log({"kind": "eval", **rec, "lr": lr})
        why = self.divergence.evaluation(rec["val_loss"], self.step)
        if why is not None:
            self.end("diverged", why)
            return
        # The authors' CNN code starts its best record and plateau history after the warm-up
        # (hypertrain.py): a warm-up evaluation is kept only until the first one after it.
        warm = self.step <= max(self.cfg.warmup_epochs * self.spe, self.cfg.warmup_steps)
        best_warm = self.best is not None and self.best.get("warmup", False)
        if (
            self.best is None
            or (best_warm and not warm)
            or (best_warm == warm and rec["val_loss"] < self.best["val_loss"])
        ):
            self.best = {
                **rec,
                "warmup": warm,
                "step": self.step,
                "hparams": self.hyper.current(),
                "scales": self.hyper.scales(),
                "model": _clone(self.model.state_dict()),
                "hyper": _clone(self.hyper.state_dict()),
            }
        weight_opts = [self.opts[k] for k in self.groups]
        if schedule and not warm and self.plateau.step(rec["val_loss"], weight_opts):
            self.end("ok", self.plateau.reason)

    def measure(self) -> dict[str, float]:
        """Full 'val' and 'test' passes of the model at the current hyperparameters, in eval
        mode: {val,test}_{loss,metric}."""
        self.model.eval()
        hyper_fn = lambda b: self.hyper.batch(b, perturb=False)  # noqa: E731
        rec = {}
        with torch.no_grad():
            for split in ("val", "test"):
                out = self.problem.evaluate(self.model, hyper_fn, split)
                rec |= {
                    f"{split}_loss": float(out["loss"]),
                    f"{split}_metric": float(out["metric"]),
                }
        return rec

    def best_at_last(self) -> dict[str, Any]:
        """The best weights evaluated at the final hyperparameters (final_hparams="last");
        the model is left as it was."""
        now = _clone(self.model.state_dict())
        self.model.load_state_dict(self.best["model"])
        rec = self.measure()
        self.model.load_state_dict(now)
        return {**rec, "hparams": self.hyper.current()}

    def end(self, status: str, reason: str | None) -> None:
        """The run's verdict, unless it already has one."""
        if self.status is None:
            self.status, self.reason = status, reason

    def _log(self, row: dict[str, Any]) -> None:
        self.rows += 1
        if self.log_fn is None:
            return
        where = {"row": self.rows - 1, "kind": row.pop("kind"), "step": self.step}
        self.log_fn({**where, "epoch": self.step / self.spe, **row,
                     "hparams": self.hyper.current(), "sigmas": self.hyper.scales(),
                     "wall_s": self.wall_s()})  # fmt: skip

    def wall_s(self) -> float:
        """Training seconds, summed over segments; a finished run found again adds none."""
        return self.elapsed + (time.perf_counter() - self.t0 if self.t0 is not None else 0.0)

    # --- state ---
    _COUNTERS = ("step", "hyper_steps", "epoch", "pos", "cycle", "val_epoch", "val_pos", "rows",
                 "last_eval_step", "status", "reason")  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": ckpt.FORMAT,
            "loop": LOOP,
            "config": asdict(self.cfg),
            "model": self.model.state_dict(),
            "hyper": self.hyper.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.opts.items()},
            "plateau": self.plateau.state_dict(),
            "divergence": self.divergence.state_dict(),
            "counters": {k: getattr(self, k) for k in self._COUNTERS},
            "wall_s": self.wall_s(),
            "problem": self.problem.state_dict() if hasattr(self.problem, "state_dict") else {},
            "best": self.best,
            "final": self.final,
            "rng": ckpt.rng_state(),
        }

    def load(self, state: dict[str, Any]) -> None:
        ckpt.check_settings(state["config"], asdict(self.cfg), _RESUMABLE)
        self.model.load_state_dict(state["model"])
        self.hyper.load_state_dict(state["hyper"])
        for k, o in self.opts.items():
            o.load_state_dict(state["optimizers"][k])
        self.plateau.load_state_dict(state["plateau"])
        self.divergence.load_state_dict(state["divergence"])
        for k, v in state["counters"].items():
            setattr(self, k, v)
        self.elapsed, self.t0 = state["wall_s"], time.perf_counter()
        if self.status is not None:
            self.t0 = None  # finished: its clock stopped
        if hasattr(self.problem, "load_state_dict"):
            self.problem.load_state_dict(state["problem"])
        self.best, self.final = state["best"], state.get("final")
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
            self.model.load_state_dict(best["model"])  # best weights with their own lambda ...
            if self.final is None:
                self.hyper.load_state_dict(best["hyper"])
            else:  # ... or with the last one, as they were evaluated at the end
                best = {**best, **self.final}
        nan, epochs, wall = math.nan, self.step / self.spe, self.wall_s()
        return STNResult(
            status=status,
            reason=self.reason,
            val_loss=best.get("val_loss", nan),
            test_loss=best.get("test_loss", nan),
            val_metric=best.get("val_metric", nan),
            test_metric=best.get("test_metric", nan),
            metric_name=getattr(self.problem, "metric_name", "metric"),
            epochs=epochs,
            steps=self.step,
            wall_s=wall,
            hparams=best.get("hparams", final),
            spent={"epochs": epochs, "seconds": wall},  # every segment was this run's own
            final_hparams=final,
            final_scales=scales,
            trajectory_len=self.hyper_steps,
            best_step=best.get("step"),
            model=self.model,
            hyper=self.hyper,
        )


def _clone(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}
