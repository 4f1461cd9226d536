"""Pieces shared by the tasks: seeded batch orders and a classification problem on tensors.

A task's batches come in an order fixed by (seed, epoch, stream) alone, never by the global RNG,
so a resumed run sees exactly the batches it would have seen, and every method of one seed
trains on the same sequence of batches. Randomness inside the objective (dropout masks,
augmentation draws, noise) uses the global RNG, which the loops save in their checkpoints.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stn.hyper import HyperBatch
from stn.problem import HyperFn
from stn.space import Space, SpaceError

__all__ = ["ClassificationProblem", "eval_mode", "generator", "penalised_weights", "with_init"]

TRAIN, VAL = 0, 1  # the streams of `generator`


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


def with_init(space: Space, init: Mapping[str, float]) -> Space:
    """`space` with the initial values of some hyperparameters replaced (checked in range)."""
    unknown = [n for n in init if n not in space]
    if unknown:
        raise SpaceError(
            f"init: unknown hyperparameters {unknown}; valid: {', '.join(space.names)}"
        )
    return Space(tuple(replace(p, init=float(init.get(p.name, p.init))) for p in space))


def penalised_weights(model: nn.Module) -> list[Tensor]:
    """The weight matrices weight decay acts on: plain and hyper weights, no biases, no V."""
    return [
        p
        for n, p in model.named_parameters()
        if n.endswith("weight") and "scaling" not in n and p.dim() > 1
    ]


class ClassificationProblem:
    """A `stn.problem.Problem` for classification on in-memory tensors.

    splits: {"train" | "val" | "test": (x, y)} with x (N, ...) and y (N,) long, already on
    `device`. Subclasses give the network (`make_model`), the input transform of every batch
    (`inputs`), the training-only transform (`train_inputs`) and penalty (`penalty`).
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
    ):
        for name in ("train", "val", "test"):
            if name not in splits or len(splits[name][1]) == 0:
                raise ValueError(f"split {name!r} is missing or empty")
        self.space, self.splits, self._make_model = space, splits, make_model
        self.seed, self.device = seed, torch.device(device)
        self.batch, self.eval_batch = batch, eval_batch

    # --- data -----------------------------------------------------------------------------
    def _shuffled(self, split: str, epoch: int, stream: int) -> Iterator[tuple[Tensor, Tensor]]:
        x, y = self.splits[split]
        order = torch.randperm(len(y), generator=generator(self.seed, epoch, stream))
        order = order.to(x.device)
        for i in range(0, len(y), self.batch):
            idx = order[i : i + self.batch]
            yield x[idx], y[idx]

    def train_batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        return self._shuffled("train", epoch, TRAIN)

    def val_batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        return self._shuffled("val", epoch, VAL)

    def steps_per_epoch(self) -> int:
        return -(-len(self.splits["train"][1]) // self.batch)

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
        """Mean cross-entropy and accuracy over a whole split, in eval mode."""
        if split not in ("val", "test"):
            raise ValueError(f"unknown split {split!r}; valid: val, test")
        x, y = self.splits[split]
        loss, correct = torch.zeros((), device=x.device), torch.zeros((), device=x.device)
        with eval_mode(model):
            for i in range(0, len(y), self.eval_batch):
                xb, yb = x[i : i + self.eval_batch], y[i : i + self.eval_batch]
                logits = model(self.inputs(xb), hyper_fn(len(yb)))
                loss += F.cross_entropy(logits, yb, reduction="sum")
                correct += (logits.argmax(-1) == yb).sum()
        return {"loss": float(loss) / len(y), "metric": float(correct) / len(y)}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
