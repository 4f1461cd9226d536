"""Delta-STN's linearised response (PAPER.md): f(x; h=0) + J_h f(x; 0) . h, for
`STNConfig(delta=True, linearize=True)`.

The hypernet input h = lambda~ - lambda is centred, so at h = 0 every scaling s = V h is zero
and the network is its plain path: the primal f(x; 0) is the plain network. Its tangent along h
is, for an STN layer y = W x + b + s_w * (U x) + s_b * c (s = V h, see stn/layers.py),

    y_dot = W x_dot + (V_w h) * (U x) + (V_b h) * c,

with x the layer's primal input and x_dot its tangent: the scaled path contributes through
ds = V h only (its own tangent is multiplied by s = 0), and the rest of the network (ReLU,
pooling, dropout with the primal's mask, reshapes) passes the tangent on as its own derivative.
`Linearized` runs the model once in forward-mode AD (`torch.autograd.forward_ad`): h is a dual
tensor with primal 0, PyTorch carries the tangent through the ordinary ops, and every STN layer
computes its primal and tangent in the closed form above (the LSTM also through its recurrence,
stn/lstm.py), so user models run unchanged. With the ordinary weights frozen the primal records
nothing for backward and the gradient of the response parameters goes through the tangent alone.

`JVPLinearized` computes the same with `torch.func.jvp` through the layers' two-path forward
(slower: both paths, the primal chain in backward); the tests use it as the reference.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor, nn

from .config import ConfigError
from .hyper import HyperBatch

__all__ = [
    "JVPLinearized",
    "Linearized",
    "at_centre",
    "centred_tangent",
    "dual",
    "frozen",
    "is_zero",
    "times_constant",
    "unpack",
]

# while Linearized runs its model: (its forward-AD level, the dual hypernet input, its tangent)
_CENTRED: contextvars.ContextVar[tuple[int, Tensor | None, Tensor | None] | None]
_CENTRED = contextvars.ContextVar("stn_centred_linearisation", default=None)
# set while Delta-STN's ordinary step runs the model: the hypernet input is zero
_ZERO = contextvars.ContextVar("stn_zero_input", default=False)


@contextmanager
def at_centre() -> Iterator[None]:
    """Inside the block the STN layers' hypernet input is zero (Delta-STN's ordinary step, at
    the current hyperparameters with the centred input): every scaling s = V h is zero, so
    each layer runs its plain path alone, a plain network's forward and backward. `net_input`
    itself stays a zero tensor for whatever else the problem does with it; a model must feed
    its layers linear functions of it (slices, columns), which are zero too."""
    token = _ZERO.set(True)
    try:
        yield
    finally:
        _ZERO.reset(token)


@contextmanager
def frozen(params: Iterable[Tensor]) -> Iterator[None]:
    """The parameters require no gradient inside the block (those that did, again after):
    autograd records nothing for them. Delta-STN's weight steps compute each loss with the
    other group frozen (e.g. a weight-decay penalty on it is a constant there)."""
    params = [p for p in params if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def is_zero() -> bool:
    """True inside `at_centre`: STN layers then skip their hyper path."""
    return _ZERO.get()


def centred_tangent(h: Tensor | None) -> Tensor | None:
    """The tangent of an STN layer's hypernet input h while `Linearized` runs the model (h's
    primal is then zero, so the layer may use the closed form); None otherwise.

    Any linear function of `net_input` (a slice, a selection of columns) keeps a zero primal;
    a model that feeds its layers anything else must not be linearised this way.
    """
    state = _CENTRED.get()
    if h is None or state is None:
        return None
    level, dual_h, h_dot = state
    return h_dot if h is dual_h else torch._unpack_dual(h, level=level)[1]


# The layers and masks split and build dual tensors with the ops behind fwAD.unpack_dual and
# fwAD.make_dual: those wrappers import modules and read the environment at every call, which
# took a tenth of a digits-MLP response forward. fwAD.make_dual of the hypernet input runs first.
def unpack(x: Tensor) -> tuple[Tensor, Tensor | None]:
    """(primal, tangent) of x at `Linearized`'s level while it runs; (x, None) otherwise."""
    state = _CENTRED.get()
    return (x, None) if state is None else torch._unpack_dual(x, level=state[0])


def dual(primal: Tensor, tangent: Tensor) -> Tensor:
    """The dual tensor (primal, tangent) at `Linearized`'s level (only while it runs)."""
    return torch._make_dual(primal, tangent, level=_CENTRED.get()[0])


def times_constant(x: Tensor, m: Tensor) -> Tensor:
    """x * m, for an m without tangent (a dropout mask). While `Linearized` runs the model, the
    tangent of x is multiplied explicitly: PyTorch's forward-mode rule for a product with a
    tangent-less factor builds a zero tensor whose shape logic runs in Python (about 0.2 ms a
    call, and more in backward), which made a third of a digits-MLP response step."""
    if _CENTRED.get() is not None:
        primal, tangent = unpack(x)
        if tangent is not None:
            return dual(primal * m, tangent * m)
    return x * m


class _Response(nn.Module):
    """Calls the wrapped model with the step's HyperBatch `hb` (set by the loop before each use)
    whose net_input is replaced; the model may be called with `hb` itself or `hb.net_input`,
    other arguments pass unchanged."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.inner, self.hb = model, None

    def _call(self, h: Tensor, args: tuple, kwargs: dict) -> Any:
        hb = self.hb

        def swap(a: Any) -> Any:
            if a is hb:
                return HyperBatch(hb.space, hb.values, h)
            return h if a is hb.net_input else a

        if hb is None or not any(a is hb or a is hb.net_input for a in (*args, *kwargs.values())):
            raise ConfigError(
                "linearize=True: call the model with the step's HyperBatch (or its net_input)"
            )
        return self.inner(*(swap(a) for a in args), **{k: swap(v) for k, v in kwargs.items()})

    def __getattr__(self, name: str) -> Any:  # the problem may use the model's own methods
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)


class Linearized(_Response):
    """Delta-STN's linearised response f(x; 0) + J_h f(x; 0) . h in closed form (module doc),
    h the centred hypernet input of `hb`.

    frozen: parameters that get no gradient through it (the ordinary weights): they are
    excluded from autograd during the forward, so nothing is recorded for them. The STN LSTM's
    closed form needs its ordinary weights frozen.
    """

    def __init__(self, model: nn.Module, frozen: Iterable[Tensor] = ()):
        super().__init__(model)
        self._frozen = list(frozen)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with frozen(self._frozen), fwAD.dual_level() as level:
            h = self.hb.net_input if self.hb is not None else None
            h_dual = fwAD.make_dual(torch.zeros_like(h), h) if h is not None else None
            token = _CENTRED.set((level, h_dual, h))
            try:
                return _collapse(self._call(h_dual, args, kwargs), level)
            finally:
                _CENTRED.reset(token)


class JVPLinearized(_Response):
    """The same response through `torch.func.jvp` of the model's own forward: the reference the
    tests hold `Linearized` to (not used by `stn.train`)."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        h = self.hb.net_input if self.hb is not None else None
        if h is None:  # nothing to linearise in: the plain network (or _call's error)
            return self._call(h, args, kwargs)
        out, tangent = torch.func.jvp(
            lambda u: self._call(u, args, kwargs), (torch.zeros_like(h),), (h,)
        )
        return _add(out, tangent)


def _collapse(out: Any, level: int) -> Any:
    """primal + tangent of every dual tensor in `out` (nested tuples, lists, dicts)."""
    if isinstance(out, Tensor):
        primal, tangent = torch._unpack_dual(out, level=level)
        return primal if tangent is None else primal + tangent
    if isinstance(out, (tuple, list)):
        return type(out)(_collapse(o, level) for o in out)
    if isinstance(out, dict):
        return {k: _collapse(v, level) for k, v in out.items()}
    return out


def _add(out: Any, tangent: Any) -> Any:
    if isinstance(out, Tensor):
        return out + tangent if out.is_floating_point() else out
    if isinstance(out, (tuple, list)):
        return type(out)(_add(o, t) for o, t in zip(out, tangent))
    if isinstance(out, dict):
        return {k: _add(v, tangent[k]) for k, v in out.items()}
    return out
