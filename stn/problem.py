"""What a training loop needs from a task: the `Problem` protocol.

Implemented by the experiments' tasks (digits, CIFAR-10, PTB) and by a user's own code. Both
loops (STN's `stn.train` and the fixed-hyperparameter one) drive the same object, so every
method trains the same network on the same data with the same objectives. Optional: `chance_loss()`,
the validation loss of a uniform prediction (log of the classes or the vocabulary), which the
loops' divergence rule compares against (`stn.config.Divergence`).

`to_device`, `batch_size` and `steps_per_epoch` are what both loops read of a problem's batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from .hyper import HyperBatch
from .space import Space

__all__ = ["HyperFn", "Problem", "batch_size", "steps_per_epoch", "to_device"]

HyperFn = Callable[[int], HyperBatch]  # batch size -> the hyperparameters of that batch


@runtime_checkable
class Problem(Protocol):
    space: Space
    metric_name: str  # e.g. "accuracy" or "perplexity"

    def build_model(self, n_hyper: int) -> nn.Module:
        """The network; n_hyper = len(space) for STN, 0 for a plain network."""

    def train_batches(self, epoch: int) -> Iterable[Any]:
        """Training batches of one epoch, in an order fixed by the problem's seed and `epoch`."""

    def val_batches(self, epoch: int) -> Iterable[Any]:
        """The validation stream the hyper steps draw from (one pass = one 'epoch' of it)."""

    def batch_size(self, batch: Any) -> int:
        """Number of examples (sequences) in a batch: the B of the HyperBatch it needs."""

    def train_loss(self, model: nn.Module, batch: Any, hb: HyperBatch) -> Tensor:
        """Regularised objective at per-example hyperparameters (augmentation, penalties);
        the loop has put the model in train mode."""

    def val_loss(self, model: nn.Module, batch: Any, hb: HyperBatch) -> Tensor:
        """Plain objective (no regularisation); the loop has put the model in eval mode."""

    def evaluate(self, model: nn.Module, hyper_fn: HyperFn, split: str) -> dict[str, float]:
        """Full pass over 'val' or 'test' in eval mode: {"loss": ..., "metric": ...}."""

    def state_dict(self) -> dict[str, Any]:
        """Carried state (e.g. LSTM hidden states between BPTT segments); {} if none."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def to_device(batch: Any, device: torch.device | str) -> Any:
    """The tensors of a batch (a tensor, or tuples / lists / dicts of them) on `device`."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def batch_size(problem: Any, batch: Any) -> int:
    """The problem's own count, else the leading dimension of the batch's first tensor."""
    if hasattr(problem, "batch_size"):
        return problem.batch_size(batch)
    while isinstance(batch, (tuple, list, dict)):
        batch = next(iter(batch.values() if isinstance(batch, dict) else batch))
    return len(batch)


def steps_per_epoch(problem: Any) -> int:
    """The problem's own count (`steps_per_epoch()`), else its training batches of epoch 0
    counted (a problem whose batches are costly to make should say)."""
    if hasattr(problem, "steps_per_epoch"):
        return int(problem.steps_per_epoch())
    n = sum(1 for _ in problem.train_batches(0))
    if n == 0:
        raise ValueError("the problem's train_batches yielded no batch")
    return n
