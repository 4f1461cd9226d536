"""digits: an MLP on scikit-learn's 8x8 digits with tuned regularisation (the CPU reproduction).

Network: 64 -> `layers` hidden layers of `hidden` ReLU units -> 10, every layer an STNLinear.
Hyperparameters: input dropout, one dropout per hidden layer, weight decay (log scale, one
perturbation per batch, in the training objective only) and input noise. Real data, every method,
minutes on two cores.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stn.hyper import HyperBatch
from stn.layers import STNLinear
from stn.regularizers import dropout, input_noise, weight_decay
from stn.space import HParam, Space

from .common import ClassificationProblem, check_task, on_device, penalised_weights, with_init

__all__ = ["DigitsMLP", "DigitsTask"]


@dataclass(frozen=True)
class DigitsTask:
    hidden: int = 128  # units per hidden layer
    layers: int = 2  # hidden layers (each gets its own dropout hyperparameter)
    batch: int = 64  # training batch size
    split_seed: int = 0  # fixes the train / val / test split, the same for every run and trial
    val_frac: float = 0.2  # fraction of the 1797 images held out for validation
    test_frac: float = 0.2  # fraction held out for testing
    epochs: float = 20.0  # training budget of one run (fixed loop and STN)
    max_steps: int | None = None  # or a budget in steps (the earlier end wins)
    # smoke runs on full-size data: training steps per epoch (the first of each epoch's
    # shuffled order) and batches of each validation / test evaluation (None: the whole split)
    epoch_steps: int | None = None
    eval_batches: int | None = None
    optimizer: str = "sgd"  # weights' optimiser: "sgd" | "adam"
    lr: float = 0.05  # weights' learning rate
    momentum: float = 0.9  # SGD momentum
    diverge_after: int = 3  # evaluations in a row above chance loss: diverged (0: off)
    # ranges: wide enough to over-regularise, narrow enough that a 20-epoch search is useful
    dropout_max: float = 0.8  # upper end of each hidden layer's dropout range
    input_dropout_max: float = 0.5  # upper end of the input dropout range (64 pixels only)
    wd_range: tuple[float, float] = (1e-6, 1e-2)  # weight decay range (log scale)
    noise_max: float = 0.5  # upper end of the input-noise std range (pixels are in [0, 1])
    init: Mapping[str, float] = field(default_factory=dict)  # initial values other than below

    def __post_init__(self) -> None:
        check_task(self)

    def space(self) -> Space:
        """input_dropout, dropout1..L, weight_decay, input_noise; all start weakly regularised."""
        drops = [HParam(f"dropout{i + 1}", 0.0, self.dropout_max, 0.05) for i in range(self.layers)]
        space = Space.of(
            HParam("input_dropout", 0.0, self.input_dropout_max, 0.05),
            *drops,
            HParam("weight_decay", *self.wd_range, init=1e-4, log=True, perturb="batch"),
            HParam("input_noise", 0.0, self.noise_max, 0.05),
        )
        return with_init(space, self.init)

    def check_data(self) -> None:
        """Nothing to check: scikit-learn ships the digits (the fractions are checked when the
        task is built)."""

    def build(self, seed: int, device: str | torch.device = "cpu") -> DigitsProblem:
        from experiments.data.digits import load_digits

        s = load_digits(self.split_seed, val_frac=self.val_frac, test_frac=self.test_frac)
        return DigitsProblem(self, on_device(s, device), seed, device)


class DigitsMLP(nn.Module):
    """x (B, 64) -> logits (B, 10); dropout at hb's per-example rates in training mode."""

    def __init__(self, n_in: int, hidden: int, layers: int, n_out: int, n_hyper: int):
        super().__init__()
        sizes = [n_in] + [hidden] * layers
        self.hidden = nn.ModuleList(STNLinear(a, b, n_hyper) for a, b in zip(sizes, sizes[1:]))
        self.out = STNLinear(hidden, n_out, n_hyper)

    def forward(self, x: Tensor, hb: HyperBatch) -> Tensor:
        h = hb.net_input  # (B, n_hyper) or None
        if self.training:
            x = dropout(x, hb["input_dropout"])
        for i, layer in enumerate(self.hidden):
            x = F.relu(layer(x, h))
            if self.training:
                x = dropout(x, hb[f"dropout{i + 1}"])
        return self.out(x, h)


class DigitsProblem(ClassificationProblem):
    def __init__(self, cfg: DigitsTask, splits, seed: int, device):
        n_in = splits["train"][0].shape[1]
        make = lambda n_hyper: DigitsMLP(n_in, cfg.hidden, cfg.layers, 10, n_hyper)  # noqa: E731
        super().__init__(
            cfg.space(), splits, make, seed, device, cfg.batch, n_classes=10,
            epoch_steps=cfg.epoch_steps, eval_batches=cfg.eval_batches,
        )  # fmt: skip

    def train_inputs(self, x: Tensor, hb: HyperBatch) -> Tensor:
        return input_noise(x, hb["input_noise"])

    def penalty(self, model: nn.Module, hb: HyperBatch) -> Tensor:
        return weight_decay(penalised_weights(model), hb["weight_decay"])
