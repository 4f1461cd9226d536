"""ptb: a 2-layer tied LSTM language model on Penn Treebank (Table 2 PTB columns, Table 1).

Network (PAPER.md, the authors' lstm/hyperlstm.py): 650-d embedding (STNEmbedding), 2-layer
650-unit LSTM (STNLSTM), and a plain linear decoder whose weight is the embedding's (no hyper
path: the authors' decoder is an nn.Linear tied to the embedding). Hyperparameters (all init
0.05): output, input and hidden dropout (locked, one rate per sequence), embedding dropout and
DropConnect on the hidden-to-hidden weights (one rate per batch), activation regularisation
alpha (AR) and temporal AR beta (TAR) (one per batch). `tune` names the ones tuned; the others
stay at `fixed` values (the authors' defaults: 0.05 for the dropouts, 0 for AR/TAR).
Batches are BPTT windows of fixed length over `batch` parallel streams; the hidden state is
carried from one window to the next (detached) and saved with the checkpoint. Metric:
perplexity; validation on `eval_batch` streams, test on `test_batch` (the authors: 10 and 1),
each with the state carried through the whole split. For smoke runs on the full corpus,
`epoch_steps` makes an epoch that many windows, each epoch going on where the last one stopped
(around the corpus, the state carried on), and `eval_batches` evaluates a split's first windows.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from stn.hyper import HyperBatch
from stn.layers import STNEmbedding
from stn.lstm import STNLSTM
from stn.problem import HyperFn
from stn.regularizers import ar_penalty, locked_dropout, tar_penalty
from stn.space import NET_INPUTS, HParam, Space, SpaceError

from .common import TaskError, check_task, eval_mode, with_init

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
# the authors' values of the hyperparameters not tuned (lstm/train.py, lstm/train_basic.py)
AUTHORS_FIXED = {**dict.fromkeys(PTB_HPARAMS[:5], 0.05), "ar_alpha": 0.0, "tar_beta": 0.0}
State = tuple[Tensor, Tensor]  # (h, c), each (layers, B, H)


@dataclass(frozen=True)
class PTBTask:
    data_dir: str = "data/ptb"  # holds ptb.train.txt, ptb.valid.txt, ptb.test.txt
    emb: int = 650  # embedding size (tied weights: equals `hidden`)
    hidden: int = 650  # LSTM units per layer
    layers: int = 2  # LSTM layers
    batch: int = 40  # parallel streams of training (and hyper-step validation) batches
    bptt: int = 70  # window length in tokens
    eval_batch: int = 10  # parallel streams of the full validation evaluation (the authors')
    test_batch: int = 1  # parallel streams of the test evaluation (the authors': 1)
    tune: tuple[str, ...] = PTB_HPARAMS  # the hyperparameters tuned; others stay at `fixed`
    fixed: Mapping[str, float] = field(default_factory=dict)  # untuned: else AUTHORS_FIXED
    init: Mapping[str, float] = field(default_factory=dict)  # initial values other than 0.05
    dropout_max: float = 1.0  # upper end of every dropout range (the authors': (0, 1))
    ar_max: float = 4.0  # AR alpha: baselines search (0, ar_max); STN maps softplus, capped
    tar_max: float = 4.0  # TAR beta: the same
    hnet_input: str = "raw"  # what the STN layers see: "raw" (u) | "value" (rates, coefs)
    val_penalties: bool = True  # the hyper steps' loss includes AR/TAR (the authors' code)
    epochs: float = 8000.0  # cap of one run (the authors' --epochs; runs end by the rules)
    max_steps: int | None = None
    # smoke runs on the full corpus: training windows per epoch (each epoch the next ones) and
    # windows of each validation / test evaluation (the split's first) (None: the whole split)
    epoch_steps: int | None = None
    eval_batches: int | None = None
    optimizer: str = "sgd"  # weights: SGD lr 30, gradient norm clipped to 0.25
    lr: float = 30.0
    momentum: float = 0.0
    grad_clip: float | None = 0.25
    lr_decay: float = 0.25  # the authors' rule: LR /4 on a non-monotone plateau ...
    decay_window: int = 5  # ... of 5 evaluations
    patience: int = 20  # stop after 20 evaluations without a new best ...
    min_lr: float = 3e-4  # ... or once the LR is below 3e-4
    decay_reset: bool = False  # stn.schedule.Plateau: False is the authors' rule
    diverge_after: int = 3  # evaluations in a row above chance loss: diverged (0: off)

    def __post_init__(self) -> None:
        if self.hnet_input not in NET_INPUTS:
            raise TaskError(
                f"PTBTask.hnet_input must be one of {NET_INPUTS}, got {self.hnet_input!r}"
            )
        check_task(self)
        self.fixed_values()

    def full_space(self) -> Space:
        """All seven hyperparameters with their ranges (init 0.05 each)."""
        d, b, sp = self.dropout_max, "batch", "softplus"
        params = (
            HParam("output_dropout", 0.0, d, 0.05),
            HParam("input_dropout", 0.0, d, 0.05),
            HParam("hidden_dropout", 0.0, d, 0.05),
            HParam("embedding_dropout", 0.0, d, 0.05, perturb=b),
            HParam("dropconnect", 0.0, d, 0.05, perturb=b),
            HParam("ar_alpha", 0.0, self.ar_max, 0.05, perturb=b, mapping=sp),
            HParam("tar_beta", 0.0, self.tar_max, 0.05, perturb=b, mapping=sp),
        )
        return Space(tuple(replace(p, net_input=self.hnet_input) for p in params))

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
        values = {n: self.fixed.get(n, min(AUTHORS_FIXED[n], rest[n].high)) for n in rest.names}
        return rest.validate(values)

    def check_data(self) -> None:
        """The three files exist and are non-empty UTF-8 text (one-line DataError naming the
        file and the fetch command); quick enough to run before any work starts."""
        from experiments.data import check_data

        check_data("ptb", self.data_dir)

    def build(self, seed: int, device: str | torch.device = "cpu") -> PTBProblem:
        from experiments.data.ptb import load_corpus

        # here, not when the config is made: `--set task.emb=.. --set task.hidden=..` passes
        # through a config with one of them changed
        if self.emb != self.hidden:
            raise TaskError(f"tied weights need emb == hidden, got {self.emb} and {self.hidden}")
        return PTBProblem(self, load_corpus(self.data_dir), seed, device)


class LSTMLM(nn.Module):
    """tokens (T, B) -> logits (T, B, V), the new state, raw and dropped last-layer outputs."""

    def __init__(self, vocab: int, size: int, layers: int, n_hyper: int, fixed: dict[str, float]):
        super().__init__()
        self.fixed = dict(fixed)  # values of the hyperparameters not in hb
        self.embedding = STNEmbedding(vocab, size, n_hyper)
        self.lstm = STNLSTM(size, size, layers, n_hyper)
        self.decoder = nn.Linear(size, vocab)  # plain, as the authors': no hyper path
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
        return self.decoder(out), state, raw, out  # logits (T, B, V)

    def fold(self, hb: HyperBatch) -> list[dict[str, Tensor]]:
        """Each STN LSTM layer's weights as a plain LSTM's, W + s_w * U and b + s_b * c, at
        the hypernet input every example of `hb` shares: computed once per evaluation."""
        h = hb.net_input
        h_row = None if h is None else h[:1]  # (1, n_hyper): every row is the same
        return [_plain_weights(layer, h_row) for layer in self.lstm.layers]

    def folded(self, tokens: Tensor, hb: HyperBatch, state: State | None = None,
               weights: list[dict[str, Tensor]] | None = None):  # fmt: skip
        """`forward` in eval mode when every example has the same hypernet input (evaluation):
        each STN LSTM layer is then a plain LSTM with the weights of `fold(hb)` (pass them
        when running many windows), run by PyTorch's fused kernel (cuDNN), here batch 1 costs
        as much per token as a batch of 40 would in the hand-written recurrence. Returns
        (logits, state)."""
        weights = self.fold(hb) if weights is None else weights
        x = self.embedding(tokens, hb.net_input)
        B, L = tokens.shape[1], len(self.lstm.layers)
        if state is None:
            zeros = x.new_zeros(L, B, self.lstm.hidden_size)
            state = (zeros, zeros)
        hs, cs = [], []
        for k, layer in enumerate(self.lstm.layers):
            x, (hk, ck) = functional_call(
                layer.rnn, weights[k], (x, (state[0][k : k + 1], state[1][k : k + 1]))
            )
            hs.append(hk[0])
            cs.append(ck[0])
        return self.decoder(x), (torch.stack(hs), torch.stack(cs))


def _plain_weights(layer: nn.Module, h: Tensor | None) -> dict[str, Tensor]:
    """nn.LSTM weights equal to one STN LSTM layer (stn.lstm) at hypernet input h (1, n)."""
    rnn = layer.rnn
    if h is None or not layer.n_hyper:
        return {}
    sw_ih, sb_ih = layer.scaling_ih(h)[0].chunk(2)  # (4H,) each
    sw_hh, sb_hh = layer.scaling_hh(h)[0].chunk(2)
    return {
        "weight_ih_l0": torch.addcmul(rnn.weight_ih_l0, sw_ih[:, None], layer.hyper_weight_ih),
        "weight_hh_l0": torch.addcmul(rnn.weight_hh_l0, sw_hh[:, None], layer.hyper_weight_hh),
        "bias_ih_l0": torch.addcmul(rnn.bias_ih_l0, sb_ih, layer.hyper_bias_ih),
        "bias_hh_l0": torch.addcmul(rnn.bias_hh_l0, sb_hh, layer.hyper_bias_hh),
    }


def _windows(
    source: Tensor, bptt: int, first: int = 0, count: int | None = None
) -> Iterator[tuple[Tensor, Tensor, int]]:
    """(x, y, index) of windows first, first + 1, ...: `count` of them, wrapping around the
    stream's end (None: to the end). Each is cut when reached, not the whole list first."""
    from experiments.data.ptb import bptt_window, n_windows

    n = n_windows(source, bptt)
    for k in range(n - first if count is None else count):
        i = (first + k) % n
        yield (*bptt_window(source, bptt, i), i)


def _detach(state: State) -> State:
    return state[0].detach(), state[1].detach()


class PTBProblem:
    """A `stn.problem.Problem` over BPTT windows; batches are (x (T, B), y (T, B), index).

    `data_info` describes the corpus for the run record: vocabulary sizes and the validation
    and test words (tokens and distinct types) that the training file lacks.
    """

    metric_name = "perplexity"

    def __init__(self, cfg: PTBTask, corpus: Any, seed: int, device: str | torch.device):
        from experiments.data.ptb import batchify, n_windows

        self.cfg, self.seed, self.device = cfg, seed, torch.device(device)
        self.space, self.fixed = cfg.space(), cfg.fixed_values()
        self.vocab = corpus.vocab_size
        self.streams = {  # (T, B) token ids on the device
            "train": batchify(corpus.train, cfg.batch).to(self.device),
            "valstream": batchify(corpus.valid, cfg.batch).to(self.device),
            "val": batchify(corpus.valid, cfg.eval_batch).to(self.device),
            "test": batchify(corpus.test, cfg.test_batch).to(self.device),
        }
        self.data_info = {
            "vocab": corpus.vocab_size,
            "train_vocab": corpus.train_vocab or corpus.vocab_size,
            "tokens": {s: len(getattr(corpus, s)) for s in ("train", "valid", "test")},
            "oov": corpus.oov,
        }
        self._n_train = n_windows(self.streams["train"], cfg.bptt)
        # stream -> {"i": window index, "in": state entering it, "out": state after it}
        self.carry: dict[str, dict[str, Any]] = {}

    def chance_loss(self) -> float:
        """Cross-entropy of a uniform prediction over the vocabulary, log(V) (a divergence
        bound: a model worse than this has learnt nothing)."""
        return math.log(self.vocab)

    def build_model(self, n_hyper: int) -> nn.Module:
        cfg = self.cfg
        return LSTMLM(self.vocab, cfg.hidden, cfg.layers, n_hyper, self.fixed).to(self.device)

    def train_batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor, int]]:
        """The whole stream in order every epoch; with `epoch_steps`, epoch e's windows are
        e * epoch_steps onwards (modulo the stream), a function of `epoch` alone (resumable)."""
        n, steps = self._n_train, self.steps_per_epoch()
        return _windows(self.streams["train"], self.cfg.bptt, epoch * steps % n, steps)

    def val_batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor, int]]:
        return _windows(self.streams["valstream"], self.cfg.bptt)

    def steps_per_epoch(self) -> int:
        """Windows of the training stream, or `epoch_steps` when that is fewer."""
        steps = self.cfg.epoch_steps
        return self._n_train if steps is None else min(self._n_train, steps)

    def batch_size(self, batch: Any) -> int:
        return int(batch[0].shape[1])

    def _state_in(self, stream: str, i: int) -> State | None:
        """The state entering window i: none at a stream's start; the same one again when a
        loop evaluates one window twice (Delta-STN); else the state after the last window."""
        c = self.carry.get(stream)
        if i == 0 or c is None:
            return None
        return c["in"] if c["i"] == i else c["out"]

    def _loss(self, stream: str, model: nn.Module, batch: Any, hb: HyperBatch) -> Tensor:
        """Cross-entropy of a window plus AR (on the last layer's output after its dropout) and
        TAR (before it), as AWD-LSTM and the authors' code."""
        x, y, i = batch
        state = self._state_in(stream, i)
        logits, new, raw, out = model(x, hb, state)
        self.carry[stream] = {"i": i, "in": state, "out": _detach(new)}
        loss = F.cross_entropy(logits.reshape(-1, self.vocab), y.reshape(-1))
        if stream != "train" and not self.cfg.val_penalties:
            return loss
        ar = ar_penalty(out, model.rate(hb, "ar_alpha"))  # coefficients detached: data
        return loss + ar + tar_penalty(raw, model.rate(hb, "tar_beta"))

    def train_loss(self, model: nn.Module, batch: Any, hb: HyperBatch) -> Tensor:
        return self._loss("train", model, batch, hb)

    def val_loss(self, model: nn.Module, batch: Any, hb: HyperBatch) -> Tensor:
        """The hyper step's objective: with `val_penalties` (the authors' lstm/train.py) the
        AR/TAR terms at the current coefficients are included (in eval mode AR acts on the
        undropped output); they reach the hyperparameters only through the hypernetwork."""
        return self._loss("valstream", model, batch, hb)

    def evaluate(self, model: nn.Module, hyper_fn: HyperFn, split: str) -> dict[str, float]:
        """Mean per-token cross-entropy over a whole split (its first `eval_batches` windows
        when set) from a zero state carried through it (val: eval_batch streams, test:
        test_batch); ppl = exp(loss)."""
        if split not in ("val", "test"):
            raise ValueError(f"unknown split {split!r}; valid: val, test")
        source = self.streams[split]
        total, count, state = torch.zeros((), device=self.device), 0, None
        with eval_mode(model):
            hb = hyper_fn(source.shape[1])
            h = hb.net_input
            same = h is None or bool((h == h[:1]).all())  # else: the per-example forward
            weights = model.fold(hb) if same else None
            windows = _windows(source, self.cfg.bptt)
            for x, y, _ in itertools.islice(windows, self.cfg.eval_batches):
                if same:
                    logits, state = model.folded(x, hb, state, weights)
                else:
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
