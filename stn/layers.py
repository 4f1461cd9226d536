"""STN layers: a plain path and a hyperparameter-scaled path (PAPER.md, "STN layer").

    y = W_elem x + b_elem + s_w(h) * (W_hyper x) + s_b(h) * b_hyper,   [s_w, s_b] = V h

Each layer takes `(x, h)` with h the (B, n_hyper) `HyperBatch.net_input`. With n_hyper=0 (or
h=None) a layer computes exactly its plain PyTorch counterpart, so one model definition serves
STN and the fixed-hyperparameter baselines. V ~ N(0, 0.01^2); Delta-STN starts from V = 0, which
the loop (`stn.loop`) sets. The two weight paths run as two matmuls / convs on the parameters
themselves: one matmul on the concatenated [W_elem; W_hyper] measured slower at every size tried
(CPU, batch 64..2800, 128..10000 units; benchmarks/bench_stn_cost.py), because the
concatenation copies both weights every forward (and its gradient is split again) while the
halves of its output are strided views that the elementwise ops then gather.

Inside Delta-STN's `stn.delta.Linearized` the hypernet input is a dual tensor with a zero
primal: a layer then returns its plain output as the primal and the closed-form tangent
W x_dot + (V_w h) * (U x) + (V_b h) * c (stn/delta.py), without the scaled path's forward.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .delta import centred_tangent, dual, is_zero, times_constant, unpack
from .regularizers import _keep_scale

__all__ = ["STNLinear", "STNConv2d", "STNEmbedding", "keep_mask", "batch_rate"]


def _check_n_hyper(n_hyper: int) -> None:
    if not isinstance(n_hyper, int) or n_hyper < 0:
        raise ValueError(f"n_hyper must be an int >= 0 (0: plain layer), got {n_hyper!r}")


def _scaling(n_hyper: int, out: int) -> nn.Linear:
    """V: Linear(n_hyper, out, bias=False), N(0, 0.01^2)."""
    lin = nn.Linear(n_hyper, out, bias=False)
    nn.init.normal_(lin.weight, std=0.01)
    return lin


def _linearized(
    plain: Tensor, w_x_dot: Tensor | None, ds_w: Tensor, hyp: Tensor, ds_b: Tensor | None, c
) -> Tensor:
    """The dual output of a linear map at zero scaling: primal `plain` (W x + b), tangent
    W x_dot + ds_w * (U x) + ds_b * c; `w_x_dot` is W x_dot (None where x has no tangent)."""
    tangent = ds_w * hyp if w_x_dot is None else torch.addcmul(w_x_dot, ds_w, hyp)
    if ds_b is not None:
        tangent = torch.addcmul(tangent, ds_b, c)
    return dual(plain, tangent)


def batch_rate(p: float | Tensor, name: str) -> float | Tensor:
    """A per-batch rate: a float in [0, 1) or a 0-dim tensor (detached: dropout rates get no
    gradient through the training loss)."""
    if isinstance(p, Tensor):
        if p.numel() != 1:
            raise ValueError(
                f"{name} must be one rate per batch (float or 0-dim tensor), got shape "
                f"{tuple(p.shape)}"
            )
        return p.detach().reshape(())
    if not 0.0 <= float(p) < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {p}")
    return float(p)


def _active_rate(p: float | Tensor, name: str, training: bool) -> float | Tensor | None:
    """`batch_rate(p, name)`, or None where it drops nothing (eval mode, or a float 0)."""
    p = batch_rate(p, name)
    return p if training and not (isinstance(p, float) and p == 0.0) else None


def keep_mask(
    shape: tuple[int, ...] | torch.Size,
    p: float | Tensor,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """One Bernoulli(1 - p) draw of `shape`, kept entries scaled by 1 / (1 - p).

    Shared by the whole batch: DropConnect masks a weight matrix, embedding dropout masks the
    rows of the vocabulary. p is a float or a 0-dim tensor (a per-batch hyperparameter). As in
    `stn.regularizers`, a rate of 1 (a perturbed rate may reach it) keeps nothing: the mask is
    all zeros, no division by zero.
    """
    dtype = dtype or torch.get_default_dtype()
    if isinstance(p, Tensor):
        p = p.to(device=device, dtype=dtype).clamp(0.0, 1.0)
    keep = (torch.rand(shape, device=device, dtype=dtype) >= p).to(dtype)  # u < 1: none at p = 1
    if isinstance(p, Tensor):
        return keep * _keep_scale(p)[1]  # 1 / (1 - p), 0 at p = 1
    return keep / (1.0 - p) if p < 1.0 else keep


def _hyper_bias(bias: Tensor | None, fan_in: int) -> nn.Parameter | None:
    """The hyper path's bias c, drawn like the plain bias, U(+-1/sqrt(fan_in)), as in each of
    the authors' codes (STN's hyperlinear.py / hyperconv2d.py / hyperlstm.py, Delta-STN's
    layers); None without a plain bias."""
    if bias is None:
        return None
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty_like(bias).uniform_(-bound, bound))


class STNLinear(nn.Linear):
    """Linear layer with a hyper path; x (..., B, in), h (B, n_hyper) -> (..., B, out)."""

    def __init__(self, in_features: int, out_features: int, n_hyper: int, bias: bool = True):
        _check_n_hyper(n_hyper)
        super().__init__(in_features, out_features, bias=bias)
        self.n_hyper = n_hyper
        if n_hyper:
            self.hyper_weight = nn.Parameter(torch.empty_like(self.weight))
            nn.init.kaiming_uniform_(self.hyper_weight, a=5**0.5)
            self.hyper_bias = _hyper_bias(self.bias, in_features)
            self.scaling = _scaling(n_hyper, 2 * out_features)  # V

    def forward(self, x: Tensor, h: Tensor | None = None) -> Tensor:
        if not self.n_hyper or h is None or is_zero():
            return F.linear(x, self.weight, self.bias)
        h_dot = centred_tangent(h)
        if h_dot is not None:  # Delta-STN's linearisation at h = 0
            x, x_dot = unpack(x)
            ds_w, ds_b = F.linear(h_dot, self.scaling.weight).chunk(2, dim=-1)
            return _linearized(
                F.linear(x, self.weight, self.bias),
                None if x_dot is None else F.linear(x_dot, self.weight),
                ds_w, F.linear(x, self.hyper_weight),
                None if self.bias is None else ds_b, self.hyper_bias,
            )  # fmt: skip
        s_w, s_b = self.scaling(h).chunk(2, dim=-1)  # (B, out) each
        out, hyp = F.linear(x, self.weight), F.linear(x, self.hyper_weight)  # (..., B, out)
        if self.bias is not None:
            out = out + (self.bias + s_b * self.hyper_bias)  # one (B, out) bias per example
        return torch.addcmul(out, s_w, hyp)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, n_hyper={self.n_hyper}"


class STNConv2d(nn.Conv2d):
    """Conv2d with a hyper path scaled per output channel; x (B, C, H, W), h (B, n_hyper)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        n_hyper: int,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        bias: bool = True,
    ):
        _check_n_hyper(n_hyper)
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias
        )
        self.n_hyper = n_hyper
        if n_hyper:
            self.hyper_weight = nn.Parameter(torch.empty_like(self.weight))
            nn.init.kaiming_uniform_(self.hyper_weight, a=5**0.5)
            self.hyper_bias = _hyper_bias(self.bias, self.weight[0].numel())
            self.scaling = _scaling(n_hyper, 2 * out_channels)  # V

    def forward(self, x: Tensor, h: Tensor | None = None) -> Tensor:
        if not self.n_hyper or h is None or is_zero():
            return self._conv_forward(x, self.weight, self.bias)
        h_dot = centred_tangent(h)
        if h_dot is not None:  # Delta-STN's linearisation at h = 0
            x, x_dot = unpack(x)
            ds_w, ds_b = F.linear(h_dot, self.scaling.weight)[:, :, None, None].chunk(2, dim=1)
            return _linearized(
                self._conv_forward(x, self.weight, self.bias),
                None if x_dot is None else self._conv_forward(x_dot, self.weight, None),
                ds_w, self._conv_forward(x, self.hyper_weight, None),
                None if self.bias is None else ds_b,
                None if self.bias is None else self.hyper_bias[:, None, None],
            )  # fmt: skip
        s_w, s_b = self.scaling(h)[:, :, None, None].chunk(2, dim=1)  # (B, out, 1, 1) each
        out = self._conv_forward(x, self.weight, None)  # (B, out, H', W')
        hyp = self._conv_forward(x, self.hyper_weight, None)
        if self.bias is not None:
            out = out + (self.bias[:, None, None] + s_b * self.hyper_bias[:, None, None])
        return torch.addcmul(out, s_w, hyp)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, n_hyper={self.n_hyper}"


class STNEmbedding(nn.Embedding):
    """Embedding with a hyper path scaled per dimension: y = E[tok] + s(h) * E_hyper[tok].

    `weight` is the plain table (num_embeddings, dim), the one a tied output layer shares.
    """

    def __init__(self, num_embeddings: int, dim: int, n_hyper: int):
        _check_n_hyper(n_hyper)
        super().__init__(num_embeddings, dim)
        self.n_hyper = n_hyper
        if n_hyper:
            self.hyper_weight = nn.Parameter(torch.empty_like(self.weight))
            nn.init.normal_(self.hyper_weight)
            self.scaling = _scaling(n_hyper, dim)  # V: s = V h, (B, dim)

    def forward(
        self, tokens: Tensor, h: Tensor | None = None, dropout: float | Tensor = 0.0
    ) -> Tensor:
        """tokens (T, B) long, h (B, n_hyper) -> (T, B, dim).

        dropout: embedding dropout, the rate of whole vocabulary words dropped (one mask per
        batch, rows kept scaled by 1 / (1 - p)); only in training mode.
        """
        y = F.embedding(tokens, self.weight)  # (T, B, dim)
        h_dot = centred_tangent(h) if self.n_hyper else None
        if h_dot is not None:  # Delta-STN's linearisation at h = 0: tangent (V h) * E_hyper[tok]
            ds = F.linear(h_dot, self.scaling.weight)  # (B, dim)
            y = dual(y, ds * F.embedding(tokens, self.hyper_weight))
        elif self.n_hyper and h is not None and not is_zero():
            # two row gathers are cheaper than concatenating two vocabulary-sized tables
            y = torch.addcmul(y, self.scaling(h), F.embedding(tokens, self.hyper_weight))
        p = _active_rate(dropout, "dropout", self.training)
        if p is not None:
            # masking the gathered rows equals masking the rows of both tables, at T*B cost
            rows = keep_mask((self.num_embeddings,), p, y.device, y.dtype)
            y = times_constant(y, rows[tokens].unsqueeze(-1))
        return y

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, n_hyper={self.n_hyper}"
