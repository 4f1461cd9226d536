"""cifar10: the paper's AlexNet variant with 15 tuned hyperparameters (Table 2, CIFAR-10 columns).

Network (PAPER.md): convs 3->64 (stride 2), 192, 384, 256, 256, all 3x3 with padding 1, max-pool
after convs 1, 2 and 5, then FC -> 4096 -> 4096 -> 10; channel-wise dropout after each conv block,
element-wise dropout before fc1 and fc2; every layer an STN layer. Augmentation (colour jitter
in a random order per image, cutout), normalisation and input scaling (each image times a factor
drawn from (1/(1+s), 1+s)) act on whole batches on the device (stn.augment); input dropout is
the network's first step. 40k / 10k / 10k images (the last 20% of the training set validates).
A run ends by the authors' rules only (patience 75, or the LR below 1e-5 after x0.1 decays);
`epochs` is a cap that does not bind. For smoke runs, `width` scales every layer, `data_limit`
cuts the splits, and `epoch_steps` / `eval_batches` cap the training steps of an epoch and the
batches of an evaluation on the whole data. docs/fidelity.md compares every setting with the
paper and the authors' code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stn.augment import color_jitter, cutout
from stn.hyper import HyperBatch
from stn.layers import STNConv2d, STNLinear
from stn.regularizers import channel_dropout, dropout, input_scaling
from stn.space import HParam, Space

from .common import ClassificationProblem, check_task, on_device, with_init

__all__ = ["AlexNet", "Cifar10Problem", "Cifar10Task"]

# per-channel statistics of the CIFAR-10 training images, the authors' (cnn/datasets/loaders.py)
MEAN = tuple(v / 255 for v in (125.3, 123.0, 113.9))
STD = tuple(v / 255 for v in (63.0, 62.1, 66.7))
CONVS = (64, 192, 384, 256, 256)  # output channels of the five convs
POOL_AFTER = (0, 1, 4)  # max-pool after convs 1, 2 and 5
FC = 4096


@dataclass(frozen=True)
class Cifar10Task:
    data_dir: str = "data/cifar10"  # holds cifar-10-batches-py/ (python -m experiments download)
    width: float = 1.0  # multiplies every conv's channels and the FC widths (1: the paper's)
    data_limit: int | None = None  # at most this many images per split (smoke runs)
    val_frac: float = 0.2  # the last 20% of the training set validates
    batch: int = 128  # training batch size
    eval_batch: int = 500  # evaluation batch size (memory only)
    epochs: float = 500.0  # cap of one run (the authors' --total_epochs, which never binds)
    max_steps: int | None = None  # or a budget in steps (the earlier end wins)
    # smoke runs on full-size data: training steps per epoch (the first of each epoch's
    # shuffled order) and batches of each validation / test evaluation (None: the whole split)
    epoch_steps: int | None = None
    eval_batches: int | None = None
    optimizer: str = "sgd"  # weights: SGD lr 0.01 momentum 0.9 (the paper's)
    lr: float = 0.01
    momentum: float = 0.9
    grad_clip: float | None = None
    lr_decay: float = 0.1  # the authors' rule: LR x0.1 when validation stops improving ...
    decay_window: int = 60  # ... over a non-monotone window of 60 epochs
    patience: int = 75  # stop after 75 epochs without a new best ...
    min_lr: float = 1e-5  # ... or once the LR is below 1e-5 (the authors' rules)
    decay_reset: bool = False  # stn.schedule.Plateau: False is the authors' rule
    diverge_after: int = 3  # evaluations in a row above chance loss: diverged (0: off)
    # cutout as the authors' code ran it: their integers are floor(high * sigmoid(u)), which
    # never reaches `high`, and the length was initialised on 0..25 but projected on 0..24: so
    # length 0..23 from 3 (init 4 became 3) and holes 0..3 from 1. False: the paper's 0..24
    # from 4 and 0..4 from 1
    authors_cutout: bool = True
    init: Mapping[str, float] = field(default_factory=dict)  # initial values other than below

    def __post_init__(self) -> None:
        check_task(self)

    def space(self) -> Space:
        """The 15 hyperparameters of PAPER.md with their ranges and initial values."""
        (cut_max, cut_init), holes_max = ((23, 3), 3) if self.authors_cutout else ((24, 4), 4)
        drops = [HParam(f"dropout_conv{i}", 0.0, 0.9, 0.05) for i in range(1, 6)]
        space = Space.of(
            *drops,
            HParam("dropout_fc1", 0.0, 0.9, 0.05),
            HParam("dropout_fc2", 0.0, 0.9, 0.05),
            HParam("input_dropout", 0.0, 1.0, 0.05),
            HParam("input_scale", 0.0, 0.3, 0.05),
            HParam("hue", 0.0, 0.5, 0.05),
            HParam("contrast", 0.0, 1.0, 0.05),
            HParam("saturation", 0.0, 1.0, 0.05),
            HParam("brightness", 0.0, 1.0, 0.05),
            HParam("cutout_length", 0, cut_max, cut_init, integer=True),
            HParam("cutout_holes", 0, holes_max, 1, integer=True),
        )
        return with_init(space, self.init)

    def check_data(self) -> None:
        """Every batch file exists and unpickles to images and labels of the right shapes (a
        one-line DataError naming the file and the fetch command); before any work starts."""
        from experiments.data import check_data

        check_data("cifar10", self.data_dir)

    def build(self, seed: int, device: str | torch.device = "cpu") -> Cifar10Problem:
        from experiments.data.cifar10 import load_cifar10

        s = load_cifar10(self.data_dir, val_frac=self.val_frac)
        return Cifar10Problem(self, on_device(s, device, self.data_limit), seed, device)


def _scaled(n: int, width: float) -> int:
    return max(1, round(n * width))


class AlexNet(nn.Module):
    """x (B, 3, 32, 32) normalised -> logits (B, 10)."""

    def __init__(self, n_hyper: int, width: float = 1.0, image: int = 32):
        super().__init__()
        chans = [3] + [_scaled(c, width) for c in CONVS]
        self.convs = nn.ModuleList(
            STNConv2d(a, b, 3, n_hyper, stride=2 if i == 0 else 1, padding=1)
            for i, (a, b) in enumerate(zip(chans, chans[1:]))
        )
        side = -(-image // 2) // 2**3  # stride-2 conv1, then three 2x2 pools: 32 -> 2
        fc = _scaled(FC, width)
        self.fc1 = STNLinear(chans[-1] * side * side, fc, n_hyper)
        self.fc2 = STNLinear(fc, fc, n_hyper)
        self.fc3 = STNLinear(fc, 10, n_hyper)

    def forward(self, x: Tensor, hb: HyperBatch) -> Tensor:
        h, train = hb.net_input, self.training
        if train:
            x = dropout(x, hb["input_dropout"])
        for i, conv in enumerate(self.convs):
            x = F.relu(conv(x, h))  # (B, C_i, H_i, W_i)
            if i in POOL_AFTER:
                x = F.max_pool2d(x, 2)
            if train:
                x = channel_dropout(x, hb[f"dropout_conv{i + 1}"])
        x = x.flatten(1)  # (B, 256 * 2 * 2)
        if train:
            x = dropout(x, hb["dropout_fc1"])
        x = F.relu(self.fc1(x, h))
        if train:
            x = dropout(x, hb["dropout_fc2"])
        x = F.relu(self.fc2(x, h))
        return self.fc3(x, h)


class Cifar10Problem(ClassificationProblem):
    def __init__(self, cfg: Cifar10Task, splits, seed: int, device):
        make = lambda n_hyper: AlexNet(n_hyper, cfg.width)  # noqa: E731
        super().__init__(
            cfg.space(), splits, make, seed, device, cfg.batch, cfg.eval_batch, n_classes=10,
            epoch_steps=cfg.epoch_steps, eval_batches=cfg.eval_batches,
        )  # fmt: skip
        dev = self.device
        self.mean = torch.tensor(MEAN, device=dev).view(1, 3, 1, 1)
        self.std = torch.tensor(STD, device=dev).view(1, 3, 1, 1)
        self.max_holes = int(self.space["cutout_holes"].high)

    def _normalise(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def inputs(self, x: Tensor) -> Tensor:
        return self._normalise(x.float() / 255.0)  # uint8 (B, 3, 32, 32) -> normalised float

    def train_inputs(self, x: Tensor, hb: HyperBatch) -> Tensor:
        """The authors' order: colour jitter on [0, 1] images, normalisation, cutout (holes at
        the mean colour, as in the cutout paper), then input scaling (input dropout, which
        commutes with it, is the network's first step)."""
        x = x.float() / 255.0
        x = color_jitter(x, hb["brightness"], hb["contrast"], hb["saturation"], hb["hue"])
        x = self._normalise(x)
        x = cutout(x, hb["cutout_length"], hb["cutout_holes"], max_holes=self.max_holes)
        return input_scaling(x, hb["input_scale"])
