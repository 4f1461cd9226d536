"""STN layers: a plain path and a hyperparameter-scaled path (PAPER.md, "STN layer").

    y = W_elem x + b_elem + s_w(h) * (W_hyper x) + s_b(h) * b_hyper,   [s_w, s_b] = V h

Each layer takes `(x, h)` with h the (B, n_hyper) `HyperBatch.net_input`. With n_hyper=0 (or
h=None) a layer computes exactly its plain PyTorch counterpart, so one model definition serves
STN and the fixed-hyperparameter baselines.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["STNLinear"]


class STNLinear(nn.Linear):
    def __init__(self, in_features: int, out_features: int, n_hyper: int, bias: bool = True,
                 zero_init_scaling: bool = False):
        super().__init__(in_features, out_features, bias=bias)
        self.n_hyper = n_hyper
        if n_hyper:
            self.hyper_weight = nn.Parameter(torch.empty_like(self.weight))
            nn.init.kaiming_uniform_(self.hyper_weight, a=5**0.5)
            self.hyper_bias = nn.Parameter(torch.zeros(out_features)) if bias else None
            self.scaling = nn.Linear(n_hyper, 2 * out_features, bias=False)  # V
            if zero_init_scaling:
                nn.init.zeros_(self.scaling.weight)
            else:
                nn.init.normal_(self.scaling.weight, std=0.01)

    def forward(self, x: Tensor, h: Tensor | None = None) -> Tensor:  # x (B, in), h (B, n_hyper)
        if not self.n_hyper or h is None:
            return F.linear(x, self.weight, self.bias)
        s_w, s_b = self.scaling(h).chunk(2, dim=-1)  # (B, out) each
        # one fused matmul for both paths: x @ [W_elem; W_hyper]^T
        both = F.linear(x, torch.cat([self.weight, self.hyper_weight]))
        out, hyp = both.chunk(2, dim=-1)
        out = out + s_w * hyp
        if self.bias is not None:
            out = out + self.bias + s_b * self.hyper_bias
        return out
