"""ptb: a 2-layer tied LSTM language model on Penn Treebank (Table 2 PTB columns, Table 1).

Network (PAPER.md): 650-d embedding (STNEmbedding), 2-layer 650-unit LSTM (STNLSTM), a decoder
(STNLinear) whose weight is the embedding's. Hyperparameters (all init 0.05): output, input and
hidden dropout (locked, one rate per sequence), embedding dropout and DropConnect on the
hidden-to-hidden weights (one rate per batch), activation regularisation alpha (AR) and temporal
AR beta (TAR) (one per batch). `tune` names the ones tuned; the others stay at `fixed` values.
Batches are BPTT windows of fixed length over `batch` parallel streams; the hidden state is
carried from one window to the next (detached) and saved with the checkpoint. Metric: perplexity.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stn.hyper import HyperBatch
from stn.layers import STNEmbedding, STNLinear
from stn.lstm import STNLSTM
from stn.problem import HyperFn
from stn.regularizers import ar_penalty, locked_dropout, tar_penalty
from stn.space import HParam, Space, SpaceError

from .common import check_task, eval_mode, with_init

__all__ = ["PTB_HPARAMS", "LSTMLM", "PTBProblem", "PTBTask"]

PTB_HPARAMS = (
    "output_dropout",
    "input_dropout",
    "hidden_dropout",
    "embedding_dropout",
    "dropconnect",
    "ar_alpha",
    "tar_beta",
)
State = tuple[Tensor, Tensor]  # (h, c), each (layers, B, H)


@dataclass(frozen=True)
class PTBTask:
    data_dir: str = "data/ptb"  # holds ptb.train.txt, ptb.valid.txt, ptb.test.txt
    emb: int = 650  # embedding size (tied weights: equals `hidden`)
    hidden: int = 650  # LSTM units per layer
    layers: int = 2  # LSTM layers
    batch: int = 40  # parallel streams of training (and hyper-step validation) batches
    bptt: int = 70  # window length in tokens
    eval_batch: int = 10  # parallel streams of the full val / test evaluation
    tune: tuple[str, ...] = PTB_HPARAMS  # the hyperparameters tuned; others stay at `fixed`
    fixed: Mapping[str, float] = field(default_factory=dict)  # values of untuned ones (else 0)
    init: Mapping[str, float] = field(default_factory=dict)  # initial values other than 0.05
    dropout_max: float = 0.95  # upper end of every dropout range
    ar_max: float = 4.0  # upper end of the AR alpha range
    tar_max: float = 4.0  # upper end of the TAR beta range
    epochs: float = 300.0  # training budget of one run (fixed loop and STN); `max_steps` too
    max_steps: int | None = None
    optimizer: str = "sgd"  # weights: SGD lr 30, gradient norm clipped to 0.25
    lr: float = 30.0
    momentum: float = 0.0
    grad_clip: float | None = 0.25
    lr_decay: float = 0.25  # the authors' rule: LR /4 on a non-monotone plateau ...
    decay_window: int = 5  # ... of 5 evaluations
    patience: int = 20  # stop after 20 evaluations without a new best ...
    min_lr: float = 3e-4  # ... or once the LR is below 3e-4

    def __post_init__(self) -> None:
        check_task(self)
        self.fixed_values()

    def full_space(self) -> Space:
        """All seven hyperparameters with their ranges (init 0.05 each)."""
        d, b = self.dropout_max, "batch"
        return Space.of(
            HParam("output_dropout", 0.0, d, 0.05),
            HParam("input_dropout", 0.0, d, 0.05),
            HParam("hidden_dropout", 0.0, d, 0.05),
            HParam("embedding_dropout", 0.0, d, 0.05, perturb=b),
            HParam("dropconnect", 0.0, d, 0.05, perturb=b),
            HParam("ar_alpha", 0.0, self.ar_max, 0.05, perturb=b),
            HParam("tar_beta", 0.0, self.tar_max, 0.05, perturb=b),
        )

    def space(self) -> Space:
        full = self.full_space()
        if not self.tune:
            raise SpaceError(f"tune is empty; name some of: {', '.join(PTB_HPARAMS)}")
        return with_init(full.subset(self.tune), self.init)

    def fixed_values(self) -> dict[str, float]:
        """The values of the hyperparameters not tuned (checked against their ranges)."""
        full, space = self.full_space(), self.space()
        wrong = [n for n in self.fixed if n not in full or n in space]
        if wrong:
            valid = [n for n in full.names if n not in space]
            raise SpaceError(f"fixed: {wrong} are unknown or tuned; valid: {valid}")
        rest = full.subset(n for n in full.names if n not in space)
        return rest.validate({n: self.fixed.get(n, 0.0) for n in rest.names})

    def check_data(self) -> None:
        """Every data file exists (a one-line DataError naming it and the fetch command)."""
        from experiments.data import check_present

        check_present("ptb", self.data_dir)

    def build(self, seed: int, device: str | torch.device = "cpu") -> PTBProblem:
        from experiments.data.ptb import load_corpus

        if self.emb != self.hidden:
            raise ValueError(f"tied weights need emb == hidden, got {self.emb} and {self.hidden}")
        return PTBProblem(self, load_corpus(self.data_dir), seed, device)


class LSTMLM(nn.Module):
    """tokens (T, B) -> logits (T, B, V), the new state, raw and dropped last-layer outputs."""

    def __init__(self, vocab: int, size: int, layers: int, n_hyper: int, fixed: dict[str, float]):
        super().__init__()
        self.fixed = dict(fixed)  # values of the hyperparameters not in hb
        self.embedding = STNEmbedding(vocab, size, n_hyper)
        self.lstm = STNLSTM(size, size, layers, n_hyper)
        self.decoder = STNLinear(size, vocab, n_hyper)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)  # AWD-LSTM's initialisation
        if n_hyper:
            nn.init.uniform_(self.embedding.hyper_weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        self.decoder.weight = self.embedding.weight  # tied

    def rate(self, hb: HyperBatch, name: str, per_batch: bool = False) -> Tensor | float:
        """(B,) per-example strength, a 0-dim per-batch one, or the fixed value."""
        if name in self.fixed:
            return self.fixed[name]
        v = hb[name]
        return v[0] if per_batch else v  # per-batch ones share one draw: any entry

    def forward(self, tokens: Tensor, hb: HyperBatch, state: State | None = None):
        h, train = hb.net_input, self.training
        x = self.embedding(tokens, h, dropout=self.rate(hb, "embedding_dropout", True))
        if train:
            x = locked_dropout(x, self.rate(hb, "input_dropout"))  # (T, B, E)
        raw, state, _ = self.lstm(
            x,
            h,
            state,
            dropconnect=self.rate(hb, "dropconnect", True),
            between=self.rate(hb, "hidden_dropout"),  # (B,) or the fixed value
        )
        out = locked_dropout(raw, self.rate(hb, "output_dropout")) if train else raw
        return self.decoder(out, h), state, raw, out  # logits (T, B, V)


def _windows(source: Tensor, bptt: int) -> Iterator[tuple[Tensor, Tensor, int]]:
    from experiments.data.ptb import bptt_batches

    for i, (x, y) in enumerate(bptt_batches(source, bptt)):
        yield x, y, i


def _detach(state: State) -> State:
    return state[0].detach(), state[1].detach()


class PTBProblem:
    """A `stn.problem.Problem` over BPTT windows; batches are (x (T, B), y (T, B), index)."""

    metric_name = "perplexity"

    def __init__(self, cfg: PTBTask, corpus: Any, seed: int, device: str | torch.device):
        from experiments.data.ptb import batchify

        self.cfg, self.seed, self.device = cfg, seed, torch.device(device)
        self.space, self.fixed = cfg.space(), cfg.fixed_values()
        self.vocab = corpus.vocab_size
        self.streams = {  # (T, B) token ids on the device
            "train": batchify(corpus.train, cfg.batch).to(self.device),
            "valstream": batchify(corpus.valid, cfg.batch).to(self.device),
            "val": batchify(corpus.valid, cfg.eval_batch).to(self.device),
            "test": batchify(corpus.test, cfg.eval_batch).to(self.device),
        }
        # stream -> {"i": window index, "in": state entering it, "out": state after it}
        self.carry: dict[str, dict[str, Any]] = {}

    def build_model(self, n_hyper: int) -> nn.Module:
        cfg = self.cfg
        return LSTMLM(self.vocab, cfg.hidden, cfg.layers, n_hyper, self.fixed).to(self.device)

    def train_batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor, int]]:
        return _windows(self.streams["train"], self.cfg.bptt)  # the same order every epoch

    def val_batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor, int]]:
        return _windows(self.streams["valstream"], self.cfg.bptt)

    def steps_per_epoch(self) -> int:
        return -(-(self.streams["train"].shape[0] - 1) // self.cfg.bptt)

    def batch_size(self, batch: Any) -> int:
        return int(batch[0].shape[1])

    def _state_in(self, stream: str, i: int) -> State | None:
        """The state entering window i: none at a stream's start; the same one again when a
        loop evaluates one window twice (Delta-STN); else the state after the last window."""
        c = self.carry.get(stream)
        if i == 0 or c is None:
            return None
        return c["in"] if c["i"] == i else c["out"]

    def _loss(self, stream: str, model: nn.Module, batch: Any, hb: HyperBatch):
        x, y, i = batch
        state = self._state_in(stream, i)
        logits, new, raw, out = model(x, hb, state)
        self.carry[stream] = {"i": i, "in": state, "out": _detach(new)}
        return F.cross_entropy(logits.reshape(-1, self.vocab), y.reshape(-1)), raw, out

    def train_loss(self, model: nn.Module, batch: Any, hb: HyperBatch) -> Tensor:
        loss, raw, out = self._loss("train", model, batch, hb)
        ar = ar_penalty(out, model.rate(hb, "ar_alpha"))  # after output dropout, as AWD-LSTM
        return loss + ar + tar_penalty(raw, model.rate(hb, "tar_beta"))  # before dropout

    def val_loss(self, model: nn.Module, batch: Any, hb: HyperBatch) -> Tensor:
        return self._loss("valstream", model, batch, hb)[0]

    def evaluate(self, model: nn.Module, hyper_fn: HyperFn, split: str) -> dict[str, float]:
        """Mean per-token cross-entropy over a whole split from a zero state; ppl = exp(loss)."""
        if split not in ("val", "test"):
            raise ValueError(f"unknown split {split!r}; valid: val, test")
        source = self.streams[split]
        total, count, state = torch.zeros((), device=self.device), 0, None
        with eval_mode(model):
            hb = hyper_fn(source.shape[1])
            for x, y, _ in _windows(source, self.cfg.bptt):
                logits, state, _, _ = model(x, hb, state)
                total += F.cross_entropy(
                    logits.reshape(-1, self.vocab), y.reshape(-1), reduction="sum"
                )
                count += y.numel()
        loss = float(total) / count
        return {"loss": loss, "metric": math.exp(loss) if loss < 700 else math.inf}

    def state_dict(self) -> dict[str, Any]:
        return {"carry": self.carry}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        move = lambda s: None if s is None else tuple(t.to(self.device) for t in s)  # noqa: E731
        self.carry = {
            k: {"i": c["i"], "in": move(c["in"]), "out": move(c["out"])}
            for k, c in state.get("carry", {}).items()
        }
