"""Delta-STN's linearised response (PAPER.md): f(x; h=0) + J_h f(x; 0) . h in one
`torch.func.jvp`, for `STNConfig(delta=True, linearize=True)`."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .config import ConfigError
from .hyper import HyperBatch

__all__ = ["Linearized"]


class Linearized(nn.Module):
    """Delta-STN's linearised response: f(x; h=0) + J_h f(x; 0) . h, with h the centred
    hypernet input of the step's HyperBatch `hb` (set by the loop before each use). The model
    may be called with `hb` itself or with `hb.net_input`; other arguments pass unchanged."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.inner, self.hb = model, None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        hb = self.hb

        def swap(a: Any, h: Tensor) -> Any:
            if a is hb:
                return HyperBatch(hb.space, hb.values, h)
            return h if a is hb.net_input else a

        if not any(a is hb or a is hb.net_input for a in (*args, *kwargs.values())):
            raise ConfigError(
                "linearize=True: call the model with the step's HyperBatch (or its net_input)"
            )

        def f(h: Tensor) -> Any:
            return self.inner(
                *(swap(a, h) for a in args), **{k: swap(v, h) for k, v in kwargs.items()}
            )

        h = hb.net_input  # (B, n): lambda~ - lambda, the perturbation
        out, tangent = torch.func.jvp(f, (torch.zeros_like(h),), (h,))
        return _add(out, tangent)

    def __getattr__(self, name: str) -> Any:  # the problem may use the model's own methods
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)


def _add(out: Any, tangent: Any) -> Any:
    if isinstance(out, Tensor):
        return out + tangent if out.is_floating_point() else out
    if isinstance(out, (tuple, list)):
        return type(out)(_add(o, t) for o, t in zip(out, tangent))
    if isinstance(out, dict):
        return {k: _add(v, tangent[k]) for k, v in out.items()}
    return out
