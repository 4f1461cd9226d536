"""The STN LSTM against nn.LSTM, a naive per-step reference, and its DropConnect contract."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stn import HParam, Hyper, Space
from stn.layers import keep_mask
from stn.lstm import STNLSTM

T, B, IN, H, N = 5, 3, 4, 6, 2
SPACE = Space.of(HParam("a", 0.0, 1.0, 0.3), HParam("b", 0.0, 0.9, 0.1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _reference(lstm: STNLSTM, hh_masks: list[torch.Tensor] | None = None) -> nn.LSTM:
    """An nn.LSTM with the plain weights of `lstm` (hidden-to-hidden ones times a mask)."""
    ref = nn.LSTM(lstm.input_size, lstm.hidden_size, lstm.num_layers).to(torch.double)
    with torch.no_grad():
        for k, layer in enumerate(lstm.layers):
            for name, p in layer.rnn.named_parameters():  # weight_ih_l0, ...
                q = p * hh_masks[k] if hh_masks and name == "weight_hh_l0" else p
                getattr(ref, name[:-1] + str(k)).copy_(q)
    return ref


def _zero_scaling(lstm: STNLSTM) -> STNLSTM:
    with torch.no_grad():
        for layer in lstm.layers:
            layer.scaling_ih.weight.zero_()
            layer.scaling_hh.weight.zero_()
    return lstm


def _naive(lstm: STNLSTM, x, h, state):
    """Per step, per path, one matmul each: the STN form read straight off the docstring."""
    outs, hn, cn = [], [], []
    for k, L in enumerate(lstm.layers):
        r = L.rnn
        sw_ih, sb_ih = L.scaling_ih(h).chunk(2, -1)
        sw_hh, sb_hh = L.scaling_hh(h).chunk(2, -1)
        hx, cx, ys = state[0][k], state[1][k], []
        for t in range(x.shape[0]):
            gates = (
                x[t] @ r.weight_ih_l0.t() + r.bias_ih_l0 + sw_ih * (x[t] @ L.hyper_weight_ih.t())
                + sb_ih * L.hyper_bias_ih + hx @ r.weight_hh_l0.t() + r.bias_hh_l0
                + sw_hh * (hx @ L.hyper_weight_hh.t()) + sb_hh * L.hyper_bias_hh
            )  # fmt: skip
            i, f, g, o = gates.chunk(4, 1)
            cx = torch.sigmoid(f) * cx + torch.sigmoid(i) * torch.tanh(g)
            hx = torch.sigmoid(o) * torch.tanh(cx)
            ys.append(hx)
        x = torch.stack(ys)
        outs.append(x)
        hn.append(hx)
        cn.append(cx)
    return x, (torch.stack(hn), torch.stack(cn)), outs


def _inputs():
    x = torch.randn(T, B, IN, dtype=torch.double)
    state = (torch.randn(2, B, H, dtype=torch.double), torch.randn(2, B, H, dtype=torch.double))
    return x, torch.randn(B, N, dtype=torch.double), state


def _flat(a) -> list[torch.Tensor]:
    return [a] if isinstance(a, torch.Tensor) else [t for item in a for t in _flat(item)]


def _close(a, b, tol=1e-10) -> bool:
    fa, fb = _flat(a), _flat(b)
    assert len(fa) == len(fb)
    return all(torch.allclose(u, v, atol=tol) for u, v in zip(fa, fb))


def test_zero_scaling_and_plain_equal_nn_lstm():
    x, h, state = _inputs()
    stn = _zero_scaling(STNLSTM(IN, H, 2, N).double())
    want = _reference(stn)(x, state)
    y, new, outs = stn(x, h, state)
    assert _close((y, new), want)
    assert torch.equal(outs[-1], y) and len(outs) == 2
    plain = STNLSTM(IN, H, 2, 0).double()
    assert _close(plain(x, h, state)[:2], _reference(plain)(x, state))
    assert not any("hyper" in k or "scaling" in k for k in plain.state_dict())


def test_fused_equals_naive_reference_with_gradients():
    x, h, state = _inputs()
    stn = STNLSTM(IN, H, 2, N).double()
    h.requires_grad_()
    got = stn(x, h, state)
    want = _naive(stn, x, h, state)
    assert _close(got, want)
    params = [h, *stn.parameters()]
    g1 = torch.autograd.grad(sum(o.square().sum() for o in got[2]) + got[1][1].sum(), params)
    g2 = torch.autograd.grad(sum(o.square().sum() for o in want[2]) + want[1][1].sum(), params)
    assert _close(g1, g2)


def test_recurrence_gradcheck():
    x, h, _ = _inputs()
    stn = STNLSTM(IN, H, 1, N).double()
    h.requires_grad_()
    state = tuple(torch.randn(1, B, H, dtype=torch.double, requires_grad=True) for _ in range(2))

    def f(h, h0, c0):
        y, (hn, cn), _ = stn(x, h, (h0, c0))
        return y, hn, cn

    assert torch.autograd.gradcheck(f, (h, *state), fast_mode=True)


def test_linearisation_jvp_matches_finite_differences():
    """torch.func.jvp w.r.t. the hypernet input (stn.delta.JVPLinearized, the reference of the
    closed-form linearisation) goes through the STN LSTM's autograd recurrence."""
    x, h, state = _inputs()
    stn = STNLSTM(IN, H, 2, N).double()

    def f(u):
        return stn(x, u, state)[0]

    _, tangent = torch.func.jvp(f, (torch.zeros_like(h),), (h,))
    eps = 1e-6
    assert torch.allclose(tangent, (f(eps * h) - f(-eps * h)) / (2 * eps), atol=1e-7)


def test_gradient_reaches_hyperparameters():
    hyper = Hyper(SPACE)
    hb = hyper.batch(B)
    lstm = STNLSTM(IN, H, 2, N)
    lstm(torch.randn(T, B, IN), hb.net_input, dropconnect=0.3)[0].square().mean().backward()
    g = hyper.raw.grad
    assert torch.isfinite(g).all() and g.abs().sum() > 0


@pytest.mark.parametrize("n_hyper", [0, N])
def test_dropconnect_is_the_weight_drop_of_w_hh(n_hyper):
    """Training with rate p equals nn.LSTM on W_hh * mask, the masks drawn per layer in order."""
    x, h, state = _inputs()
    stn = STNLSTM(IN, H, 2, n_hyper).double()
    if n_hyper:
        _zero_scaling(stn)
    p = 0.4
    torch.manual_seed(1)
    y, new, _ = stn(x, h, state, dropconnect=torch.tensor(p))
    torch.manual_seed(1)
    masks = [keep_mask((4 * H, H), p, dtype=torch.double) for _ in range(2)]
    assert _close((y, new), _reference(stn, masks)(x, state))
    assert not _close(y, stn(x, h, state)[0])


@pytest.mark.parametrize("n_hyper", [0, N])
def test_dropconnect_one_mask_per_batch_and_off_in_eval(n_hyper):
    stn = STNLSTM(IN, H, 2, n_hyper)
    x = torch.randn(T, 1, IN).expand(T, 8, IN)  # 8 copies of one sequence
    h = torch.randn(1, N).expand(8, N)
    y = stn(x, h, dropconnect=0.5)[0]
    assert torch.allclose(y, y[:, :1].expand_as(y))  # every example saw the same mask
    assert not torch.allclose(y, stn(x, h)[0])
    assert torch.equal(stn(x, h, dropconnect=0.0)[0], stn(x, h)[0])  # rate 0 is the identity
    stn.eval()
    assert torch.equal(stn(x, h, dropconnect=0.5)[0], stn(x, h)[0])
    with pytest.raises(ValueError, match="one rate per batch"):
        stn(x, h, dropconnect=torch.full((8,), 0.5))


def test_between_is_per_example_locked_dropout_in_training_only():
    x, h, _ = _inputs()
    stn = STNLSTM(IN, H, 2, N).double()
    rate = torch.tensor([0.0, 0.5, 0.9], dtype=torch.double)
    y, _, outs = stn(x, h, between=rate)
    clean, _, clean_outs = stn(x, h)
    assert torch.equal(outs[0], clean_outs[0])  # first layer's own output: undropped
    assert torch.allclose(y[:, 0], clean[:, 0])  # rate 0 for example 0
    assert not torch.allclose(y[:, 1:], clean[:, 1:])
    stn.eval()
    assert torch.equal(stn(x, h, between=rate)[0], stn(x, h)[0])


def test_mixed_precision_runs_in_autocast_dtype():
    x, h = torch.randn(T, B, IN), torch.randn(B, N)
    stn = STNLSTM(IN, H, 2, N)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = stn(x, h, dropconnect=0.2)[0]
        y_eval = stn.eval()(x, h)[0]
    assert y.dtype == torch.bfloat16
    assert torch.allclose(y_eval.float(), stn(x, h)[0], atol=2e-2)
    y.float().square().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in stn.parameters() if p.grad is not None)
