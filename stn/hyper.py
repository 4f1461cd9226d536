"""The hyper module: hyperparameters stored unconstrained, their perturbation, and the batch view.

`Hyper` holds one unconstrained value and one raw scale per hyperparameter of a `Space`
(sigma = softplus(raw scale)). `Hyper.batch(B)` samples per-example perturbed values and returns a
`HyperBatch`: the constrained values the regularisers use, and the input the STN layers see.
A fixed-hyperparameter network gets `HyperBatch.fixed(...)`, whose `net_input` is None.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .space import HParam, Space

__all__ = ["Hyper", "HyperBatch", "constrain", "net_view", "unconstrain"]

_LOG_2PI_E = math.log(2 * math.pi * math.e)


def _span(p: HParam) -> tuple[float, float]:
    """The continuous interval a bounded hyperparameter is relaxed to (integers: [low, high+1))."""
    return (p.low, p.high + 1.0) if p.integer else (p.low, p.high)


def constrain(space: Space, u: Tensor, floor: bool = True) -> Tensor:
    """Map unconstrained values u (..., n) to hyperparameter values; integers are floored
    (unless `floor` is False: the continuous relaxation, differentiable).

    Bounded: stretched sigmoid into (low, high) (log scale: on log(low)..log(high));
    half-bounded, or `mapping="softplus"`: low + softplus(u) (capped at a finite high).
    """
    cols = []
    for i, p in enumerate(space):
        x = u[..., i]
        if not p.bounded or p.mapping == "softplus":
            v = p.low + F.softplus(x)
            if p.bounded:
                v = torch.clamp(v, max=p.high)
        elif p.log:
            lo, hi = math.log(p.low), math.log(p.high)
            v = torch.exp(lo + (hi - lo) * torch.sigmoid(x))
        else:
            lo, hi = _span(p)
            v = lo + (hi - lo) * torch.sigmoid(x)
        if p.integer and floor:
            v = torch.clamp(torch.floor(v), max=p.high) if p.bounded else torch.floor(v)
        cols.append(v)
    return torch.stack(cols, dim=-1)


def net_view(space: Space, u: Tensor) -> Tensor:
    """What STN layers see of unconstrained values u (..., n): u itself where a hyperparameter's
    `net_input` is "raw", its (continuous) value where it is "value"."""
    if all(p.net_input == "raw" for p in space):
        return u
    values = constrain(space, u, floor=False)
    raw = torch.tensor([p.net_input == "raw" for p in space], device=u.device)
    return torch.where(raw, u, values)


def _inv_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


def unconstrain(space: Space, values: Mapping[str, float]) -> Tensor:
    """Inverse of `constrain` (an integer value k maps to the middle of its cell, k + 0.5)."""
    out = []
    for p in space:
        v = float(values[p.name])
        if not p.contains(v):
            raise ValueError(f"{p.name}={v} outside its range ({p.low}, {p.high})")
        if not p.bounded or p.mapping == "softplus":
            out.append(_inv_softplus(max(v - p.low, 1e-6) + (0.5 if p.integer else 0.0)))
            continue
        if p.log:
            lo, hi, v = math.log(p.low), math.log(p.high), math.log(v)
        else:
            (lo, hi), v = _span(p), v + (0.5 if p.integer else 0.0)
        t = min(max((v - lo) / (hi - lo), 1e-6), 1 - 1e-6)  # ends of the range: just inside
        out.append(math.log(t) - math.log1p(-t))
    return torch.tensor(out, dtype=torch.float32)


class HyperBatch:
    """The hyperparameters of one batch.

    values:    (B, n) constrained values (integers floored); what regularisers read.
    net_input: (B, n) what STN layers are conditioned on; None for a plain network.
    """

    def __init__(self, space: Space, values: Tensor, net_input: Tensor | None = None):
        self.space, self.values, self.net_input = space, values, net_input

    def __getitem__(self, name: str) -> Tensor:
        return self.values[:, self.space.index(name)]  # (B,)

    def __len__(self) -> int:
        return self.values.shape[0]

    @classmethod
    def fixed(
        cls,
        space: Space,
        values: Mapping[str, float],
        batch_size: int,
        device: torch.device | str | None = None,
    ) -> HyperBatch:
        """Every example gets the same given values; no hypernetwork input."""
        row = torch.tensor([float(values[p.name]) for p in space], device=device)
        return cls(space, row.expand(batch_size, len(space)), None)


class Hyper(nn.Module):
    """Unconstrained hyperparameters and perturbation scales of one `Space`.

    What the STN layers see (`net_input`), with v(u) = `net_view(space, u)` (u itself, or the
    mapped value for hyperparameters whose `net_input` is "value"):
    - default (the paper's STN): v(u~), of the perturbed unconstrained values;
    - anchored=True: v(u~) - v(u0), relative to the initial values u0 (a fixed buffer). The same
      family of responses, with an input of order sigma; an option (off in the paper's
      experiments), e.g. for large learning rates with raw inputs far from 0;
    - centred=True (Delta-STN): v(u~) - v(u).detach(), exactly zero at the current
      hyperparameters, so the network there is the ordinary weights alone.
    """

    def __init__(
        self, space: Space, sigma_init: float = 0.5, centred: bool = False, anchored: bool = False
    ):
        super().__init__()
        if not len(space):
            raise ValueError("Hyper needs a non-empty space")
        if sigma_init <= 0:
            raise ValueError(f"sigma_init must be > 0, got {sigma_init}")
        self.space, self.centred, self.anchored = space, centred, anchored
        self.raw = nn.Parameter(unconstrain(space, space.init()))
        # u0, the origin of the layers' input when anchored
        self.register_buffer("anchor", self.raw.detach().clone())
        self.raw_scale = nn.Parameter(torch.full((len(space),), _inv_softplus(sigma_init)))
        per_batch = [p.perturb == "batch" for p in space]
        self.register_buffer("per_batch", torch.tensor(per_batch), persistent=False)
        self._current: tuple[Tensor, HyperBatch] | None = None  # see `current_batch`

    def sigma(self) -> Tensor:
        return F.softplus(self.raw_scale)

    def entropy(self) -> Tensor:
        """Entropy of the perturbation N(u, diag(sigma^2)): sum log(sigma * sqrt(2 pi e))."""
        return (torch.log(self.sigma()) + 0.5 * _LOG_2PI_E).sum()

    def batch(self, batch_size: int, perturb: bool = True) -> HyperBatch:
        """Sample per-example hyperparameters; 'batch' hyperparameters share one draw."""
        n = len(self.space)
        u = self.raw.expand(batch_size, n)
        if perturb:
            eps = torch.randn(batch_size, n, device=self.raw.device)
            eps = torch.where(self.per_batch, eps[:1].expand_as(eps), eps)
            u = u + self.sigma() * eps
        net_input = net_view(self.space, u)
        if self.centred:
            net_input = net_input - net_view(self.space, self.raw.detach())
        elif self.anchored:
            net_input = net_input - net_view(self.space, self.anchor)
        return HyperBatch(self.space, constrain(self.space, u), net_input)

    def current_batch(self, batch_size: int) -> HyperBatch:
        """`batch(batch_size, perturb=False)` without a graph, reused while the hyperparameters
        stay the same (Delta-STN's ordinary steps: every weight step between two hyper steps
        sees the same values, and building them is ~30 small ops)."""
        cached = self._current
        raw = self.raw.detach()
        if (
            cached is None
            or len(cached[1]) != batch_size
            or cached[0].device != raw.device
            or cached[0].dtype != raw.dtype
            or not torch.equal(cached[0], raw)
        ):
            with torch.no_grad():
                cached = self._current = (raw.clone(), self.batch(batch_size, perturb=False))
        return cached[1]

    def current(self) -> dict[str, float]:
        """The current (unperturbed) constrained values."""
        with torch.no_grad():
            v = constrain(self.space, self.raw.detach()[None])[0]
        return {p.name: float(x) for p, x in zip(self.space, v.tolist())}

    def scales(self) -> dict[str, float]:
        return {p.name: float(s) for p, s in zip(self.space, self.sigma().detach().tolist())}
