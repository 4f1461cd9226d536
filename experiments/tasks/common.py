"""Pieces shared by the tasks: seeded batch orders and a classification problem on tensors.

A task's batches come in an order fixed by (seed, epoch, stream) alone, never by the global RNG,
so a resumed run sees exactly the batches it would have seen, and every method of one seed
trains on the same sequence of batches. Randomness inside the objective (dropout masks,
augmentation draws, noise) uses the global RNG, which the loops save in their checkpoints.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import fields, replace
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from experiments.fixed import OPTIMIZERS
from stn.hyper import HyperBatch
from stn.problem import HyperFn
from stn.space import Space, SpaceError

if TYPE_CHECKING:
    from experiments.data import Splits

__all__ = [
    "ClassificationProblem",
    "TaskError",
    "check_task",
    "eval_mode",
    "generator",
    "on_device",
    "penalised_weights",
    "with_init",
]

TRAIN, VAL = 0, 1  # the streams of `generator`


class TaskError(ValueError):
    """A task setting out of its valid range (a user mistake: one-line message)."""


def _between(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False):
    def ok(v: Any) -> bool:
        return (lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi)

    return ok, f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


_POSITIVE = (lambda v: v > 0, "> 0")
_NON_NEGATIVE = (lambda v: v >= 0, ">= 0")
# The rule of each task field of this name (None is valid where a field allows it).
_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    **dict.fromkeys(
        "hidden layers emb bptt batch eval_batch test_batch data_limit width".split(), _POSITIVE
    ),
    **dict.fromkeys("epoch_steps eval_batches".split(), _POSITIVE),  # None: the whole split
    **dict.fromkeys("epochs max_steps lr grad_clip".split(), _POSITIVE),
    **dict.fromkeys(
        "split_seed decay_window patience min_lr noise_max ar_max tar_max diverge_after".split(),
        _NON_NEGATIVE,
    ),
    "val_frac": _between(0, 1, True, True),
    "test_frac": _between(0, 1, True, True),
    "momentum": _between(0, 1, hi_open=True),
    "lr_decay": _between(0, 1, lo_open=True),
    "dropout_max": _between(0, 1, lo_open=True),
    "input_dropout_max": _between(0, 1, lo_open=True),
    "optimizer": (lambda v: v in OPTIMIZERS, " or ".join(map(repr, OPTIMIZERS))),  # fixed loop's
}


def _numbers(value: Any) -> Iterator[float]:
    """The numbers in a setting: itself, or those of a tuple / list / mapping's values."""
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _numbers(v)


def check_task(task: Any) -> None:
    """Check a task config's settings and its search space; raise TaskError (or SpaceError)
    naming the first bad one. Tasks call it when built, so an override like task.lr=-1 or
    task.epochs=inf fails before anything runs."""
    name = type(task).__name__
    for f in fields(task):
        value = getattr(task, f.name)
        if any(not math.isfinite(v) for v in _numbers(value)):
            raise TaskError(f"{name}.{f.name} must be finite, got {value!r}")
        rule = _RULES.get(f.name)
        if rule is not None and value is not None and not rule[0](value):
            raise TaskError(f"{name}.{f.name} must be {rule[1]}, got {value!r}")
    held_out = getattr(task, "val_frac", 0.0) + getattr(task, "test_frac", 0.0)
    if held_out >= 1:  # each is checked in (0, 1) above; together they must leave training data
        raise TaskError(
            f"{name}.val_frac + test_frac must be below 1 (the rest trains), got {held_out:g}"
        )
    task.space()  # ranges and initial values


def generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded by a stable hash of integer keys (never Python's hash())."""
    digest = hashlib.sha256(repr(tuple(int(k) for k in keys)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Evaluation mode and no gradients for the block; the previous mode comes back after."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was)


def on_device(
    splits: Splits, device: torch.device | str, limit: int | None = None
) -> dict[str, tuple[Tensor, Tensor]]:
    """{"train" | "val" | "test": (x, y)} of a Splits record on `device`, each cut to its first
    `limit` examples when given (the `splits` of ClassificationProblem)."""
    parts = {"train": (splits.train_x, splits.train_y), "val": (splits.val_x, splits.val_y),
             "test": (splits.test_x, splits.test_y)}  # fmt: skip
    return {name: (x[:limit].to(device), y[:limit].to(device)) for name, (x, y) in parts.items()}


def with_init(space: Space, init: Mapping[str, float]) -> Space:
    """`space` with the initial values of some hyperparameters replaced (checked in range)."""
    unknown = [n for n in init if n not in space]
    if unknown:
        raise SpaceError(
            f"init: unknown hyperparameters {unknown}; valid: {', '.join(space.names)}"
        )
    return Space(tuple(replace(p, init=float(init.get(p.name, p.init))) for p in space))


def penalised_weights(model: nn.Module) -> list[Tensor]:
    """The weight matrices weight decay acts on: plain and hyper weights, no biases, no V;
    only those being trained (requires_grad): a frozen weight's penalty is a constant, e.g. the
    other group in each of Delta-STN's two weight steps."""
    return [
        p
        for n, p in model.named_parameters()
        if p.requires_grad and n.endswith("weight") and "scaling" not in n and p.dim() > 1
    ]


class ClassificationProblem:
    """A `stn.problem.Problem` for classification on in-memory tensors.

    splits: {"train" | "val" | "test": (x, y)} with x (N, ...) and y (N,) long, already on
    `device`. Subclasses give the network (`make_model`), the input transform of every batch
    (`inputs`), the training-only transform (`train_inputs`) and penalty (`penalty`).
    n_classes: the number of classes (default: the largest label + 1). `data_info` holds the
    split sizes and classes for the run record.
    epoch_steps: training batches per epoch, the first of each epoch's shuffled order (so every
    epoch trains on another random subset; None: the whole split); eval_batches: batches of
    `eval_batch` examples each 'val' / 'test' evaluation reads, the split's first (None: all).
    Both make a smoke run on full-size data small; the hyper steps' validation stream is not
    cut (each hyper step reads one batch, so its cost follows the training steps).
    """

    metric_name = "accuracy"

    def __init__(
        self,
        space: Space,
        splits: dict[str, tuple[Tensor, Tensor]],
        make_model: Callable[[int], nn.Module],
        seed: int,
        device: torch.device | str,
        batch: int,
        eval_batch: int = 1000,
        n_classes: int | None = None,
        epoch_steps: int | None = None,
        eval_batches: int | None = None,
    ):
        for name in ("train", "val", "test"):
            if name not in splits or len(splits[name][1]) == 0:
                raise ValueError(f"split {name!r} is missing or empty")
        self.space, self.splits, self._make_model = space, splits, make_model
        self.seed, self.device = seed, torch.device(device)
        self.batch, self.eval_batch = batch, eval_batch
        self.epoch_steps, self.eval_batches = epoch_steps, eval_batches
        if n_classes is None:
            n_classes = 1 + max(int(y.max()) for _, y in splits.values())
        self.n_classes = n_classes
        self.data_info = {
            "examples": {name: len(y) for name, (_, y) in splits.items()},
            "classes": n_classes,
        }

    def chance_loss(self) -> float:
        """Cross-entropy of a uniform prediction, log(n_classes) (a divergence bound: a model
        worse than this has learnt nothing)."""
        return math.log(self.n_classes)

    # --- data -----------------------------------------------------------------------------
    def _shuffled(self, split: str, epoch: int, stream: int) -> Iterator[tuple[Tensor, Tensor]]:
        x, y = self.splits[split]
        order = torch.randperm(len(y), generator=generator(self.seed, epoch, stream))
        order = order.to(x.device)
        for i in range(0, len(y), self.batch):
            idx = order[i : i + self.batch]
            yield x[idx], y[idx]

    def train_batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        return itertools.islice(self._shuffled("train", epoch, TRAIN), self.steps_per_epoch())

    def val_batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        return self._shuffled("val", epoch, VAL)

    def steps_per_epoch(self) -> int:
        """Batches of the whole training split, or `epoch_steps` when that is fewer."""
        full = -(-len(self.splits["train"][1]) // self.batch)
        return full if self.epoch_steps is None else min(full, self.epoch_steps)

    def batch_size(self, batch: tuple[Tensor, Tensor]) -> int:
        return int(batch[1].shape[0])

    # --- model and objectives ---------------------------------------------------------------
    def build_model(self, n_hyper: int) -> nn.Module:
        return self._make_model(n_hyper).to(self.device)

    def inputs(self, x: Tensor) -> Tensor:
        """Every batch's input transform (e.g. uint8 -> normalised float)."""
        return x

    def train_inputs(self, x: Tensor, hb: HyperBatch) -> Tensor:
        """Training batches' inputs: `inputs` plus augmentation at per-example strengths."""
        return self.inputs(x)

    def penalty(self, model: nn.Module, hb: HyperBatch) -> Tensor | float:
        """Training-only penalty added to the loss (e.g. weight decay)."""
        return 0.0

    def train_loss(self, model: nn.Module, batch: Any, hb: HyperBatch) -> Tensor:
        x, y = batch
        logits = model(self.train_inputs(x, hb), hb)
        return F.cross_entropy(logits, y) + self.penalty(model, hb)

    def val_loss(self, model: nn.Module, batch: Any, hb: HyperBatch) -> Tensor:
        x, y = batch
        return F.cross_entropy(model(self.inputs(x), hb), y)

    def evaluate(self, model: nn.Module, hyper_fn: HyperFn, split: str) -> dict[str, float]:
        """Mean cross-entropy and accuracy over a whole split (its first `eval_batches`
        batches when set), in eval mode."""
        if split not in ("val", "test"):
            raise ValueError(f"unknown split {split!r}; valid: val, test")
        x, y = self.splits[split]
        n = len(y)  # examples read: all, or whole batches (every slice below ends by n)
        if self.eval_batches is not None:
            n = min(n, self.eval_batches * self.eval_batch)
        loss, correct = torch.zeros((), device=x.device), torch.zeros((), device=x.device)
        with eval_mode(model):
            for i in range(0, n, self.eval_batch):
                xb, yb = x[i : i + self.eval_batch], y[i : i + self.eval_batch]
                logits = model(self.inputs(xb), hyper_fn(len(yb)))
                loss += F.cross_entropy(logits, yb, reduction="sum")
                correct += (logits.argmax(-1) == yb).sum()
        return {"loss": float(loss) / n, "metric": float(correct) / n}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
