"""A stacked LSTM whose input-to-hidden and hidden-to-hidden maps are STN linear maps.

Per layer, with gates in PyTorch's order (i, f, g, o), each of size H (4H together):

    gates_t = W_ih x_t + b_ih + s_w^ih * (U_ih x_t) + s_b^ih * c_ih
            + W_hh h_{t-1} + b_hh + s_w^hh * (U_hh h_{t-1}) + s_b^hh * c_hh

(W plain weights, U hyper weights, c hyper biases, [s_w, s_b] = V h per example).
The input path of all timesteps is one matmul on [W_ih; U_ih]; each step does one matmul on
[W_hh; U_hh]. DropConnect (AWD-LSTM weight drop) masks the hidden-to-hidden weights with one
mask per batch, the same mask on both paths. With n_hyper=0 or h=None each layer runs
PyTorch's fused LSTM kernel on its own (drop-connected) weights.

The STN recurrence is a hand-written autograd Function: its backward does one matmul per step
and the weight gradient of all steps in one matmul at the end, where plain autograd would do two
per step and accumulate a (8H, H) gradient T times. Delta-STN's linearisation (stn/delta.py)
runs the plain recurrence as the primal and the tangent's own recurrence (`_Tangent`), one
(4H, H) matmul a step each; `torch.func.jvp` (the tests' reference) takes the plain autograd
loop instead.
"""

from __future__ import annotations

import math

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.func import functional_call

from .delta import centred_tangent, dual, is_zero, unpack
from .layers import _active_rate, _check_n_hyper, _scaling, keep_mask
from .regularizers import locked_dropout

__all__ = ["STNLSTM"]

State = tuple[Tensor, Tensor]  # (h, c), each (num_layers, B, H) as in nn.LSTM


def _activate_(gates: Tensor) -> Tensor:
    """In place on pre-activations (B, 4H): sigmoid on i, f, o and tanh on g."""
    H = gates.shape[-1] // 4
    gates[:, : 2 * H].sigmoid_()
    gates[:, 2 * H : 3 * H].tanh_()
    gates[:, 3 * H :].sigmoid_()
    return gates


def _forward(pre: Tensor, sw: Tensor | None, w: Tensor, h0: Tensor, c0: Tensor):
    """The recurrence gates_t = pre_t + a_t (+ s_w * b_t) with [a_t, b_t] = h_{t-1} w^T, w (8H, H)
    with the hyper path, (4H, H) without (sw None). Returns hs, cs (T+1, B, H), the gate
    activations (T, B, 4H), and b (T, B, 4H) or None."""
    T, B, G = pre.shape
    hs, cs = pre.new_empty(T + 1, B, G // 4), pre.new_empty(T + 1, B, G // 4)
    acts = torch.empty_like(pre)
    hyp = torch.empty_like(pre) if sw is not None else None
    hs[0], cs[0] = h0, c0
    z, wt = pre.new_empty(B, w.shape[0]), w.t()
    for t in range(T):
        if sw is None:
            torch.addmm(pre[t], hs[t], wt, out=acts[t])
        else:
            torch.mm(hs[t], wt, out=z)
            hyp[t] = z[:, G:]
            torch.addcmul(z[:, :G], sw, z[:, G:], out=acts[t]).add_(pre[t])
        i, f, g, o = _activate_(acts[t]).split(G // 4, dim=1)
        torch.mul(f, cs[t], out=cs[t + 1]).addcmul_(i, g)
        torch.mul(o, cs[t + 1].tanh(), out=hs[t + 1])
    return hs, cs, acts, hyp


def _derivatives(acts: Tensor, cs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """tanh(c_t), its derivative, and the derivative of each gate's activation w.r.t. its
    pre-activation (sigmoid for i, f, o; tanh for g), from the forward's saved values."""
    H = acts.shape[-1] // 4
    tcs = cs[1:].tanh()
    dtcs = 1 - tcs * tcs  # d tanh(c_t)
    dact = acts * (1 - acts)  # d sigmoid / d pre-activation; tanh for g
    dact[..., 2 * H : 3 * H] = 1 - acts[..., 2 * H : 3 * H].square()
    return tcs, dtcs, dact


def _backward(acts, cs, w, sw, dhs, dcs) -> tuple[Tensor, Tensor, Tensor]:
    """Backpropagation through the recurrence `_forward` ran: from the gradients w.r.t. hs and
    cs (T+1, B, H) to dz (T, B, 8H or 4H) = [d gates, s_w * d gates] per step (d gates: the
    gradient w.r.t. pre) and the gradients w.r.t. h0, c0."""
    # c_t = f c_{t-1} + i g and h_t = o tanh(c_t), walked back from t = T-1; dh and dc
    # carry the gradient w.r.t. h_t and c_t (direct use + through step t+1)
    T, B, G = acts.shape
    H = G // 4
    tcs, dtcs, dact = _derivatives(acts, cs)
    dz = acts.new_empty(T, B, w.shape[0])
    dh, dc = dhs[T].clone(), dcs[T].clone()
    for t in range(T - 1, -1, -1):
        i, f, g, o = acts[t].split(H, dim=1)
        d = dz[t]
        di, df, dg, do = d[:, :G].split(H, dim=1)
        torch.mul(dh, tcs[t], out=do)
        dc.addcmul_(dh * o, dtcs[t])
        torch.mul(dc, g, out=di)
        torch.mul(dc, i, out=dg)
        torch.mul(dc, cs[t], out=df)
        d[:, :G].mul_(dact[t])
        if sw is not None:
            torch.mul(d[:, :G], sw, out=d[:, G:])
        dc = dc.mul_(f).add_(dcs[t])
        dh = torch.mm(d, w).add_(dhs[t])
    return dz, dh, dc


class _Recurrence(torch.autograd.Function):
    """(pre (T, B, 4H), s_w (B, 4H), w (8H, H), h0, c0 (B, H)) -> hs, cs (T+1, B, H), with
    gates_t = pre_t + a_t + s_w * b_t and [a_t, b_t] = h_{t-1} w^T. Also returns (as
    non-differentiable outputs) what the backward needs: activations and b (T, B, 4H)."""

    @staticmethod
    def forward(pre, sw, w, h0, c0):
        return _forward(pre, sw, w, h0, c0)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, sw, w, _, _ = inputs
        hs, cs, acts, hyp = output
        ctx.mark_non_differentiable(acts, hyp)
        ctx.save_for_backward(sw, w, hs, cs, acts, hyp)

    @staticmethod
    @once_differentiable
    def backward(ctx, dhs, dcs, _dacts, _dhyp):
        sw, w, hs, cs, acts, hyp = ctx.saved_tensors
        T, B, G = acts.shape
        H = G // 4
        dz, dh, dc = _backward(acts, cs, w, sw, dhs, dcs)
        dgates = dz[..., :G]
        dsw = (dgates * hyp).sum(0) if ctx.needs_input_grad[1] else None
        dw = None
        if ctx.needs_input_grad[2]:  # all steps at once: (8H, T*B) @ (T*B, H)
            dw = dz.reshape(T * B, 2 * G).t() @ hs[:T].reshape(T * B, H)
        return dgates, dsw, dw, dh, dc


class _Tangent(torch.autograd.Function):
    """The tangent of the plain recurrence (`_forward` without hyper path) whose primal gave
    hs, cs (T+1, B, H) and the gate activations acts (T, B, 4H): (a (T, B, 4H), w (4H, H), ...,
    dh0, dc0 (B, H)) -> dhs, dcs (T+1, B, H), the tangents of hs and cs when the
    pre-activations' tangent is a_t + dh_{t-1} w^T. With the gate derivatives D_t:

        u_t = D_t * (a_t + dh_{t-1} w^T) = [di, df, dg, do]
        dc_t = df c_{t-1} + f dc_{t-1} + di g + i dg,   dh_t = do tanh(c_t) + o tanh'(c_t) dc_t

    It is linear in (a, dh0, dc0) with w and the primal held constant, and its adjoint is the
    primal recurrence's backpropagation w.r.t. (pre, h0, c0): the backward is `_backward`."""

    @staticmethod
    def forward(a, w, hs, cs, acts, dh0, dc0):
        T, B, G = a.shape
        H = G // 4
        tcs, dtcs, dact = _derivatives(acts, cs)
        dhs, dcs = a.new_empty(T + 1, B, H), a.new_empty(T + 1, B, H)
        dhs[0], dcs[0] = dh0, dc0
        u, wt = a.new_empty(B, G), w.t()
        for t in range(T):
            torch.addmm(a[t], dhs[t], wt, out=u).mul_(dact[t])
            di, df, dg, do = u.split(H, dim=1)
            i, f, g, o = acts[t].split(H, dim=1)
            dc = torch.mul(df, cs[t], out=dcs[t + 1]).addcmul_(f, dcs[t])
            dc.addcmul_(di, g).addcmul_(i, dg)
            torch.mul(o, dtcs[t], out=dhs[t + 1]).mul_(dc).addcmul_(do, tcs[t])
        return dhs, dcs

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, w, _, cs, acts, _, _ = inputs
        ctx.save_for_backward(w, cs, acts)

    @staticmethod
    @once_differentiable
    def backward(ctx, ghs, gcs):
        w, cs, acts = ctx.saved_tensors
        da, dh0, dc0 = _backward(acts, cs, w, None, ghs, gcs)
        return da, None, None, None, None, dh0, dc0


def _recurrence_autograd(pre, sw, w, h0, c0):
    """The same recurrence in plain autograd ops (forward-mode AD goes through it)."""
    G = pre.shape[-1]
    wt, hs, cs = w.t(), [h0], [c0]
    for pre_t in pre.unbind(0):  # unbind: its backward stacks once, no (T, B, 4H) per step
        a, b = (hs[-1] @ wt).split(G, dim=-1)
        i, f, g, o = torch.addcmul(pre_t + a, sw, b).split(G // 4, dim=-1)
        cs.append(torch.addcmul(f.sigmoid() * cs[-1], i.sigmoid(), g.tanh()))
        hs.append(o.sigmoid() * cs[-1].tanh())
    return torch.stack(hs), torch.stack(cs)


def _has_tangent(*tensors: Tensor) -> bool:
    return any(fwAD.unpack_dual(t).tangent is not None for t in tensors)


class _Layer(nn.Module):
    """One LSTM layer; `rnn` holds the plain weights under nn.LSTM's names."""

    def __init__(self, input_size: int, hidden_size: int, n_hyper: int):
        super().__init__()
        self.n_hyper = n_hyper
        self.rnn = nn.LSTM(input_size, hidden_size)
        if n_hyper:
            g, bound = 4 * hidden_size, 1.0 / math.sqrt(hidden_size)  # nn.LSTM's init range
            self.hyper_weight_ih = nn.Parameter(torch.empty(g, input_size).uniform_(-bound, bound))
            self.hyper_weight_hh = nn.Parameter(torch.empty(g, hidden_size).uniform_(-bound, bound))
            self.hyper_bias_ih = nn.Parameter(torch.empty(g).uniform_(-bound, bound))
            self.hyper_bias_hh = nn.Parameter(torch.empty(g).uniform_(-bound, bound))
            self.scaling_ih = _scaling(n_hyper, 2 * g)  # -> [s_w^ih, s_b^ih]
            self.scaling_hh = _scaling(n_hyper, 2 * g)  # -> [s_w^hh, s_b^hh]

    def forward(self, x: Tensor, h: Tensor | None, state: State, mask: Tensor | None):
        """x (T, B, in), state (h0, c0) each (B, H), mask (4H, H) or None -> (T, B, H), state."""
        if not self.n_hyper or h is None or is_zero():
            return self._plain(x, state, mask)
        h_dot = centred_tangent(h)
        if h_dot is not None:
            return self._linearized(x, h_dot, state, mask)
        rnn = self.rnn
        sw_ih, sb_ih = self.scaling_ih(h).chunk(2, dim=-1)  # (B, 4H) each
        sw_hh, sb_hh = self.scaling_hh(h).chunk(2, dim=-1)
        bias = torch.addcmul(rnn.bias_ih_l0 + rnn.bias_hh_l0, sb_ih, self.hyper_bias_ih)
        bias = torch.addcmul(bias, sb_hh, self.hyper_bias_hh)  # (B, 4H)
        # input path of every timestep at once: (T, B, 8H) -> plain and hyper halves
        a, b = F.linear(x, torch.cat([rnn.weight_ih_l0, self.hyper_weight_ih])).chunk(2, dim=-1)
        pre = torch.addcmul(a + bias, sw_ih, b)  # (T, B, 4H)
        w_hh = torch.cat([rnn.weight_hh_l0, self.hyper_weight_hh])  # (8H, H)
        if mask is not None:
            w_hh = w_hh * mask.repeat(2, 1)
        args = (pre, sw_hh, w_hh, *state)
        if _has_tangent(*args):
            hs, cs = _recurrence_autograd(*args)
            return hs[1:], (hs[-1], cs[-1])
        # mixed precision: the recurrence in autocast's dtype, with autocast itself off (out=)
        kind = x.device.type
        amp = torch.is_autocast_enabled(kind)
        dtype = torch.get_autocast_dtype(kind) if amp else pre.dtype
        with torch.autocast(kind, enabled=False):
            hs, cs = _Recurrence.apply(*(a.to(dtype) for a in args))[:2]
        return hs[1:], (hs[-1], cs[-1])

    def _linearized(self, x: Tensor, h_dot: Tensor, state: State, mask: Tensor | None):
        """Delta-STN's linearisation at h = 0 (stn/delta.py): the plain LSTM as the primal, and
        the tangent along h_dot of every output, as dual tensors. The tangent of the gates'
        pre-activations is a_t + W_hh dh_{t-1}, where a_t, everything but the recurrent term,

            a_t = W_ih x_dot_t + ds_w^ih * (U_ih x_t) + ds_w^hh * (U_hh h_{t-1})
                + ds_b^ih * c_ih + ds_b^hh * c_hh,   [ds_w, ds_b] = V h_dot,

        takes a few matmuls over all timesteps; `_Tangent` then runs the recurrence of the
        tangent with the primal's gate values. The ordinary weights must be frozen (Linearized
        freezes them): the closed form holds them, and the primal, constant."""
        rnn = self.rnn
        (x, x_dot), (h0, dh0), (c0, dc0) = (unpack(v) for v in (x, *state))
        w_ih, w_hh, u_hh = rnn.weight_ih_l0, rnn.weight_hh_l0, self.hyper_weight_hh
        plain = (x, h0, c0, w_ih, w_hh, rnn.bias_ih_l0, rnn.bias_hh_l0)
        if torch.is_grad_enabled() and any(v.requires_grad for v in plain):
            raise RuntimeError(
                "the STN LSTM's linearisation differentiates the response only: its input's "
                "primal, state and ordinary weights must not require grad (freeze them)"
            )
        if mask is not None:
            w_hh, u_hh = w_hh * mask, u_hh * mask
        sw_ih, sb_ih = F.linear(h_dot, self.scaling_ih.weight).chunk(2, dim=-1)  # (B, 4H) each
        sw_hh, sb_hh = F.linear(h_dot, self.scaling_hh.weight).chunk(2, dim=-1)
        kind = x.device.type
        amp = torch.is_autocast_enabled(kind)
        pre = F.linear(x, w_ih, rnn.bias_ih_l0 + rnn.bias_hh_l0)  # (T, B, 4H)
        dtype = torch.get_autocast_dtype(kind) if amp else pre.dtype  # as the STN recurrence
        pre, w_hh, h0, c0 = (v.to(dtype) for v in (pre, w_hh, h0, c0))
        with torch.autocast(kind, enabled=False):
            hs, cs, acts, _ = _forward(pre, None, w_hh, h0, c0)
        a = torch.addcmul(sw_ih * F.linear(x, self.hyper_weight_ih), sw_hh, F.linear(hs[:-1], u_hh))
        a = a + torch.addcmul(sb_ih * self.hyper_bias_ih, sb_hh, self.hyper_bias_hh)
        if x_dot is not None:
            a = a + F.linear(x_dot, w_ih)
        zero = hs.new_zeros(hs.shape[1:])
        dh0 = zero if dh0 is None else dh0.to(dtype)
        dc0 = zero if dc0 is None else dc0.to(dtype)
        with torch.autocast(kind, enabled=False):
            dhs, dcs = _Tangent.apply(a.to(dtype), w_hh, hs, cs, acts, dh0, dc0)
        return dual(hs[1:], dhs[1:]), (dual(hs[-1], dhs[-1]), dual(cs[-1], dcs[-1]))

    def _plain(self, x: Tensor, state: State, mask: Tensor | None):
        h0, c0 = state[0][None], state[1][None]  # (1, B, H)
        if mask is None:
            y, (hn, cn) = self.rnn(x, (h0, c0))
        else:  # the fused kernel on the drop-connected weight
            w = {"weight_hh_l0": self.rnn.weight_hh_l0 * mask}
            y, (hn, cn) = functional_call(self.rnn, w, (x, (h0, c0)), strict=False)
        return y, (hn[0], cn[0])


class STNLSTM(nn.Module):
    """Stacked STN LSTM over sequences (T, B, input_size); n_hyper=0 is a plain nn.LSTM."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, n_hyper: int):
        super().__init__()
        _check_n_hyper(n_hyper)
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.n_hyper = n_hyper
        sizes = [input_size] + [hidden_size] * (num_layers - 1)
        self.layers = nn.ModuleList(_Layer(n, hidden_size, n_hyper) for n in sizes)

    def forward(
        self,
        x: Tensor,
        h: Tensor | None = None,
        state: State | None = None,
        dropconnect: float | Tensor = 0.0,
        between: Tensor | None = None,
    ) -> tuple[Tensor, State, list[Tensor]]:
        """x (T, B, in), h (B, n_hyper) -> output (T, B, H), new state, per-layer outputs.

        state: (h, c) each (num_layers, B, H), zeros if None.
        dropconnect: rate of DropConnect on the hidden-to-hidden weights, one per batch
            (float or 0-dim tensor); training mode only.
        between: (B,) per-example locked-dropout rate applied to the output of every layer but
            the last; training mode only.
        The per-layer outputs (each (T, B, H), before `between` dropout) serve AR/TAR.
        """
        B = x.shape[1]
        if state is None:
            zeros = x.new_zeros(self.num_layers, B, self.hidden_size)
            state = (zeros, zeros)
        p = _active_rate(dropconnect, "dropconnect", self.training)
        outputs, hs, cs = [], [], []
        for k, layer in enumerate(self.layers):
            w = layer.rnn.weight_hh_l0
            mask = keep_mask(w.shape, p, w.device, w.dtype) if p is not None else None  # (4H, H)
            y, (hk, ck) = layer(x, h, (state[0][k], state[1][k]), mask)
            outputs.append(y)
            hs.append(hk)
            cs.append(ck)
            x = y
            if between is not None and self.training and k < self.num_layers - 1:
                x = locked_dropout(y, between)
        return outputs[-1], (torch.stack(hs), torch.stack(cs)), outputs

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
            f"n_hyper={self.n_hyper}"
        )
