"""Regularisers whose strength is set per example by a hyperparameter (PAPER.md, "The method").

Every strength is a tensor of shape (B,), one value per example (what `HyperBatch["name"]`
returns), or a Python number for the whole batch. Strengths are data: they are detached and
never differentiated (STN never differentiates the training loss w.r.t. the hyperparameters).
Each function acts on the whole batch at once on the batch's device.

The dropouts act whenever they are called, whatever the module's mode: the caller decides, e.g.
`if self.training: x = dropout(x, hb["dropout"])`. A rate of 0 is exactly the identity; rates
are clamped into [0, 1], and a rate of 1 zeroes the example (no division by zero).
Random draws use the global RNG, or `generator` (a `torch.Generator` on x's device) to repeat them.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from .delta import times_constant

__all__ = [
    "StrengthError",
    "as_strength",
    "ar_penalty",
    "channel_dropout",
    "dropout",
    "input_noise",
    "input_scaling",
    "locked_dropout",
    "tar_penalty",
    "weight_decay",
]


class StrengthError(ValueError):
    """A strength whose shape does not fit the batch (a user mistake: one-line message)."""


def as_strength(s: Tensor | float, batch: int, like: Tensor, name: str) -> Tensor:
    """Strength as a detached (batch,) tensor on `like`'s device and dtype."""
    t = torch.as_tensor(s, device=like.device).detach().to(like.dtype)
    if t.dim() == 0:
        return t.expand(batch)
    if t.shape != (batch,):
        raise StrengthError(
            f"{name}: expected a number or a ({batch},) tensor, one per example; "
            f"got shape {tuple(t.shape)}"
        )
    return t


def _keep_scale(p: Tensor) -> tuple[Tensor, Tensor]:
    """Keep probability q = 1 - p and the inverted-dropout scale 1/q (0 where q is 0)."""
    q = 1.0 - p.clamp(0.0, 1.0)
    # q = 1 - p is 0 or at least half an ulp of 1 in any float dtype, so 1/q is finite except
    # at q = 0 (inf) or for a nan rate, both made 0
    return q, q.reciprocal().nan_to_num_(nan=0.0, posinf=0.0)


def _masked(
    x: Tensor, p: Tensor, mask_shape: tuple[int, ...], view: tuple[int, ...], gen
) -> Tensor:
    """x * Bernoulli(1 - p) / (1 - p), mask drawn with `mask_shape`, p viewed as `view`."""
    q, scale = _keep_scale(p)
    u = torch.rand(mask_shape, generator=gen, device=x.device, dtype=x.dtype)
    # u in [0, 1): keep when u < q, so q = 1 (p = 0) keeps everything and q = 0 keeps nothing
    mask = torch.where(u < q.view(view), scale.view(view), 0.0)
    return times_constant(x, mask)  # x * mask


def _batch_view(x: Tensor, dim: int = 0) -> tuple[int, ...]:
    """Shape that broadcasts a (B,) tensor along dimension `dim` of x."""
    return tuple(-1 if i == dim else 1 for i in range(x.dim()))


def dropout(x: Tensor, p: Tensor | float, generator: torch.Generator | None = None) -> Tensor:
    """Element-wise dropout of x (B, ...) with per-example rate p (B,), scaled by 1/(1-p)."""
    p = as_strength(p, x.shape[0], x, "dropout rate")
    return _masked(x, p, tuple(x.shape), _batch_view(x), generator)


def channel_dropout(
    x: Tensor, p: Tensor | float, generator: torch.Generator | None = None
) -> Tensor:
    """Drop whole channels of x (B, C, ...) with per-example rate p (B,) (the paper's conv dropout).

    One draw per (example, channel) is shared over the spatial positions; kept channels are
    scaled by 1/(1-p).
    """
    if x.dim() < 3:
        raise StrengthError(f"channel_dropout expects x of shape (B, C, ...), got {tuple(x.shape)}")
    p = as_strength(p, x.shape[0], x, "channel dropout rate")
    mask_shape = (x.shape[0], x.shape[1]) + (1,) * (x.dim() - 2)
    return _masked(x, p, mask_shape, _batch_view(x), generator)


def locked_dropout(
    x: Tensor, p: Tensor | float, generator: torch.Generator | None = None
) -> Tensor:
    """Variational dropout of a sequence x (T, B, C): one mask per sequence, shared over time.

    p is (B,), one rate per sequence (the batch is dimension 1).
    """
    if x.dim() != 3:
        raise StrengthError(f"locked_dropout expects x of shape (T, B, C), got {tuple(x.shape)}")
    p = as_strength(p, x.shape[1], x, "locked dropout rate")
    return _masked(x, p, (1, x.shape[1], x.shape[2]), (1, -1, 1), generator)


def input_noise(
    x: Tensor, scale: Tensor | float, generator: torch.Generator | None = None
) -> Tensor:
    """x (B, ...) plus Gaussian noise of per-example standard deviation scale (B,); not clamped."""
    s = as_strength(scale, x.shape[0], x, "input noise scale")
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + noise * s.view(_batch_view(x))


def input_scaling(
    x: Tensor, scale: Tensor | float, generator: torch.Generator | None = None
) -> Tensor:
    """x (B, ...) times one factor per example drawn uniformly from (1/(1+s), 1+s), s (B,) the
    per-example strength (the authors' CIFAR-10 "input scaling", cnn/hypertrain.py; applied to
    normalised images). A strength of 0 leaves the example unchanged exactly."""
    s = as_strength(scale, x.shape[0], x, "input scaling strength").clamp_min(0.0)
    u = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
    lo = 1.0 / (1.0 + s)
    return x * (lo + (1.0 + s - lo) * u).view(_batch_view(x))


def _per_sequence_mean(sq: Tensor, coef: Tensor | float, name: str) -> Tensor:
    """mean_b coef_b * mean_{t,h} sq[t, b, h] for sq (T, B, H)."""
    c = as_strength(coef, sq.shape[1], sq, name)
    return (c * sq.mean(dim=(0, 2))).mean()


def ar_penalty(h: Tensor, alpha: Tensor | float) -> Tensor:
    """Activation regularisation (AWD-LSTM AR): mean_b alpha_b * mean_{t,j} h[t, b, j]^2.

    h (T, B, H) is the last layer's output AFTER its (locked) dropout, as in AWD-LSTM.
    alpha is a number or (B,). Returns a scalar to add to the training objective only.
    """
    if h.dim() != 3:
        raise StrengthError(f"ar_penalty expects h of shape (T, B, H), got {tuple(h.shape)}")
    return _per_sequence_mean(h.pow(2), alpha, "AR coefficient")


def tar_penalty(h_raw: Tensor, beta: Tensor | float) -> Tensor:
    """Temporal AR (AWD-LSTM TAR): mean_b beta_b * mean_{t,j} (h[t, b, j] - h[t-1, b, j])^2.

    h_raw (T, B, H) is the last layer's output BEFORE dropout; the mean runs over the T-1
    differences. beta is a number or (B,). A sequence of length 1 gives 0.
    """
    if h_raw.dim() != 3:
        raise StrengthError(f"tar_penalty expects h of shape (T, B, H), got {tuple(h_raw.shape)}")
    if h_raw.shape[0] < 2:
        return h_raw.sum() * 0.0  # keeps the graph and the device
    return _per_sequence_mean((h_raw[1:] - h_raw[:-1]).pow(2), beta, "TAR coefficient")


def weight_decay(params: Iterable[Tensor], coef: Tensor | float) -> Tensor:
    """L2 penalty coef * 0.5 * sum_w ||w||^2 for the training objective only.

    coef is a number, or a tensor whose mean is taken (the batch mean of a per-example (B,)
    strength). A task that tunes weight decay trains on `loss + weight_decay(...)` and validates
    on the plain loss, so the hyperparameter is judged by what it does to held-out data.
    """
    params = list(params)
    if not params:
        return torch.zeros(())
    c = torch.as_tensor(coef).detach()
    c = c.to(params[0].device, params[0].dtype).mean()
    total = torch.stack([w.pow(2).sum() for w in params]).sum()
    return 0.5 * c * total
