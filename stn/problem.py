"""What a training loop needs from a task: the `Problem` protocol.

Implemented by the experiments' tasks (digits, CIFAR-10, PTB) and by a user's own code. Both
loops (STN's `stn.train` and the fixed-hyperparameter one) drive the same object, so every
method trains the same network on the same data with the same objectives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

from .hyper import HyperBatch
from .space import Space

__all__ = ["Problem", "HyperFn"]

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
