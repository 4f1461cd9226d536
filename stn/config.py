"""Settings and results of the two training loops (STN's `stn.loop`, the fixed-hyperparameter
`experiments.fixed`) and the rules they share.

- `STNConfig` (checked when built) and `STNResult`; `Result`, what both loops return and what a
  run store's result.json holds;
- `make_optimizer` over `OPTIMIZERS`: one list of weight optimisers for both loops;
- `Divergence`: when a run has diverged, the same rule in both loops.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import Tensor, nn

from .hyper import Hyper

__all__ = [
    "OPTIMIZERS",
    "ConfigError",
    "Divergence",
    "Result",
    "STNConfig",
    "STNResult",
    "make_optimizer",
]


class ConfigError(ValueError):
    """An invalid STN configuration or setup (a user mistake: one-line message)."""


FINAL_HPARAMS = ("best", "last")  # STNConfig.final_hparams
OPTIMIZERS = ("sgd", "adam", "rmsprop")


def make_optimizer(
    name: str, params: Iterable[Tensor], lr: float, momentum: float = 0.0, fused: bool = False
) -> torch.optim.Optimizer:
    """The weights' (or hyperparameters') optimiser; `momentum` is SGD's and RMSprop's.

    fused: SGD's and Adam's one-kernel step where PyTorch has it (floating tensors on CPU or
    CUDA). It rounds differently from the per-tensor loop, so only Delta-STN's weights use it
    (two optimiser steps a batch; 2-4% of a Delta-STN step of the digits MLP), and STN and the
    fixed loop stay bit-identical to their earlier results."""
    params = list(params)
    kw = {"fused": True} if fused and all(_fusable(p) for p in params) else {}
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, **kw)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, **kw)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=momentum)
    raise ConfigError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")


def _fusable(p: Tensor) -> bool:
    return p.is_floating_point() and p.device.type in ("cpu", "cuda")


class Divergence:
    """When a run has diverged, in both loops: a loss that is not finite, or a validation loss
    above the problem's chance level for `patience` evaluations in a row.

    The chance level is `problem.chance_loss()` when the problem has one (the loss of a
    uniform prediction: log(classes), log(vocabulary)); without it, or with patience 0, only
    non-finite losses count. A run this far above chance learns nothing, and its losses must
    not be selected or tabled as a result.
    """

    def __init__(self, problem: Any, patience: int):
        chance = getattr(problem, "chance_loss", None)
        self.bound = float(chance()) if callable(chance) and patience > 0 else None
        self.patience, self.above = patience, 0

    @staticmethod
    def loss(value: float, what: str, step: int) -> str | None:
        """The reason a training or hyper-step loss ends the run, or None."""
        return None if math.isfinite(value) else f"non-finite {what} ({value}) at step {step}"

    def evaluation(self, val_loss: float, step: int) -> str | None:
        """Count one evaluation; the reason the run has diverged, or None."""
        if not math.isfinite(val_loss):
            return f"non-finite validation loss ({val_loss}) at step {step}"
        if self.bound is None:
            return None
        self.above = self.above + 1 if val_loss > self.bound else 0
        if self.above < self.patience:
            return None
        return (
            f"validation loss above chance ({self.bound:.4g}) for {self.above} evaluations in a "
            f"row, {val_loss:.4g} at step {step}"
        )

    def state_dict(self) -> dict[str, Any]:
        return {"above": self.above}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.above = int(state["above"])


@dataclass(frozen=True)
class STNConfig:
    """Settings of one STN run. Defaults: the paper's CNN setting (PAPER.md)."""

    epochs: int = 10  # passes over the training batches
    max_steps: int | None = None  # optional cap on weight steps (a step budget)
    warmup_epochs: int = 0  # weight steps only during these first epochs ...
    warmup_steps: int = 0  # ... and these first weight steps (CNN: 5 epochs; LSTM: ~1 epoch)
    train_steps: int = 2  # T_train: weight steps per cycle
    val_steps: int = 1  # T_val: hyper steps per cycle
    optimizer: str = "sgd"  # weights: "sgd" | "adam" | "rmsprop"
    lr: float = 0.01  # weights' learning rate
    momentum: float = 0.9  # sgd / rmsprop momentum
    grad_clip: float | None = None  # max norm of the weights' gradient, per group (PTB: 0.25)
    hyper_optimizer: str = "adam"  # hyperparameters and scales: "sgd" | "adam" | "rmsprop"
    hyper_lr: float = 3e-3  # hyperparameters' learning rate
    scale_lr: float = 3e-3  # perturbation scales' learning rate
    tune_scales: bool = True  # learn sigma: perturb in hyper steps, minus entropy_weight * H
    entropy_weight: float = 1e-3  # tau, weight of the perturbation's entropy
    sigma_init: float = 0.5  # initial perturbation scale (unconstrained units)
    anchored: bool = False  # layers see u~ - u0 instead of u~ (stn.Hyper; an option)
    delta: bool = False  # Delta-STN: centred input, V = 0 at start, split weight updates
    linearize: bool = False  # Delta-STN: train the response linearised (stn/delta.py)
    evaluate_every: int = 1  # full val/test evaluation every this many epochs
    lr_decay: float = 1.0  # weights' LR x this on a validation plateau (1: off; CNN 0.1)
    decay_window: int = 0  # non-monotone window, in evaluations (0: off; CNN 60, LSTM 5)
    patience: int = 0  # stop after this many evaluations without a new best (0: off)
    min_lr: float = 0.0  # stop once the weights' LR is below this (LSTM: 3e-4)
    decay_reset: bool = False  # clear the plateau history after a decay (False: the authors')
    diverge_after: int = 3  # evaluations in a row above the problem's chance loss (0: off)
    # what the best weights are reported with: "best", their own hyperparameters (the numbers of
    # their evaluation), or "last", the run's final ones, evaluated again at the end (the
    # authors' CIFAR code, whose reload of the best checkpoint kept the last hyperparameters)
    final_hparams: str = "best"
    seed: int = 0  # seeds Python, NumPy and torch at the start of a fresh run
    device: str = "cpu"  # torch device of the model, hyperparameters and batches
    checkpoint_every_steps: int = 0  # also save every this many steps (0: at each epoch's end)

    def __post_init__(self) -> None:
        _check_types(self)
        for problem in _problems(self):
            raise ConfigError(problem)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> STNConfig:
        """A config from keyword values; an unknown key is an error listing the valid ones."""
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ConfigError(f"unknown STNConfig keys {unknown}; valid: {', '.join(valid)}")
        return cls(**values)

    @classmethod
    def delta_stn(cls, **overrides: Any) -> STNConfig:
        """Delta-STN's preset (Bae & Grosse's code): RMSprop 1e-2 for the hyperparameters,
        5 weight steps per hyper step, sigma 1.0, entropy weight 1e-3, linearised response."""
        preset = dict(
            delta=True,
            linearize=True,
            hyper_optimizer="rmsprop",
            hyper_lr=1e-2,
            scale_lr=1e-2,
            train_steps=5,
            sigma_init=1.0,
            entropy_weight=1e-3,
        )
        return cls.from_dict({**preset, **overrides})


_KINDS = {"int": int, "float": (int, float), "bool": bool, "str": str}


def _check_types(cfg: STNConfig) -> None:
    for f in fields(cfg):
        v, kinds = getattr(cfg, f.name), [k.strip() for k in str(f.type).split("|")]
        if v is None and "None" in kinds:
            continue
        if not any(
            isinstance(v, _KINDS[k]) and (k == "bool") == isinstance(v, bool)
            for k in kinds
            if k in _KINDS
        ):
            raise ConfigError(f"STNConfig.{f.name} must be {f.type}, got {v!r}")


def _problems(c: STNConfig):
    """Yield what is wrong with a config, one line each (the first one is raised)."""
    for name in ("epochs", "train_steps", "val_steps", "evaluate_every"):
        if getattr(c, name) < 1:
            yield f"{name} must be >= 1, got {getattr(c, name)}"
    non_negative = "warmup_epochs warmup_steps entropy_weight decay_window patience diverge_after"
    for name in (*non_negative.split(), "min_lr", "seed", "checkpoint_every_steps"):
        if getattr(c, name) < 0:
            yield f"{name} must be >= 0, got {getattr(c, name)}"
    for name in ("lr", "hyper_lr", "scale_lr", "sigma_init"):
        if not getattr(c, name) > 0:
            yield f"{name} must be > 0, got {getattr(c, name)}"
    for name in ("optimizer", "hyper_optimizer"):
        if getattr(c, name) not in OPTIMIZERS:
            yield f"unknown {name} {getattr(c, name)!r}; valid: {', '.join(OPTIMIZERS)}"
    if c.max_steps is not None and c.max_steps < 1:
        yield f"max_steps must be >= 1 or None, got {c.max_steps}"
    if c.grad_clip is not None and not c.grad_clip > 0:
        yield f"grad_clip must be > 0 or None, got {c.grad_clip}"
    if not 0 <= c.momentum < 1:
        yield f"momentum must be in [0, 1), got {c.momentum}"
    if not 0 < c.lr_decay <= 1:
        yield f"lr_decay must be in (0, 1], got {c.lr_decay}"
    if c.final_hparams not in FINAL_HPARAMS:
        yield f"unknown final_hparams {c.final_hparams!r}; valid: {', '.join(FINAL_HPARAMS)}"
    if c.linearize and not c.delta:
        yield "linearize is a Delta-STN option: set delta=True too"
    try:
        torch.device(c.device)
    except RuntimeError:
        yield f"unknown device {c.device!r}; e.g. 'cpu', 'cuda', 'cuda:1'"


@dataclass
class Result:
    """What a training loop returns; `as_record()` is a run store's result.json.

    Losses and metrics are those of the evaluation with the lowest validation loss (the same
    selection in both loops), `hparams` the hyperparameters of that moment. A diverged run
    reports that evaluation too (NaN if there was none) and says why in `reason`."""

    status: str  # "ok" | "diverged" | "interrupted" (cut on purpose: resumes from its checkpoint)
    reason: str | None  # why it ended early: a stopping rule, or the divergence; None otherwise
    val_loss: float
    test_loss: float
    val_metric: float
    test_metric: float
    metric_name: str
    epochs: float  # epochs the model has trained (fractional: steps / steps per epoch)
    steps: int  # training steps (batches) the model has taken
    wall_s: float  # wall-clock seconds the model has trained, summed over resumed segments
    hparams: dict[str, float]
    spent: dict[str, float]  # {"epochs", "seconds"} of this run alone (a promotion: not its
    #                          parent's share)

    def as_record(self) -> dict[str, Any]:
        """A JSON-ready dict with the run store's result keys (and a few more)."""
        return {k: v for k, v in asdict(self).items() if k not in ("model", "hyper")}


@dataclass
class STNResult(Result):
    """`Result` with what an STN run adds; `model` and `hyper` hold the best-validation state."""

    final_hparams: dict[str, float] = field(default_factory=dict)
    final_scales: dict[str, float] = field(default_factory=dict)
    trajectory_len: int = 0  # hyper steps taken (one logged row each)
    best_step: int | None = None  # step of the best-validation evaluation
    model: nn.Module | None = field(default=None, repr=False)
    hyper: Hyper | None = field(default=None, repr=False)
