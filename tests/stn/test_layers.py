"""STN linear, conv and embedding layers against plain PyTorch and naive references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stn import HParam, Hyper, Space
from stn.layers import STNConv2d, STNEmbedding, STNLinear, keep_mask

B, N = 4, 3
SPACE = Space.of(
    HParam("a", 0.0, 1.0, 0.3), HParam("b", 0.0, 0.9, 0.1), HParam("c", 1e-3, 1.0, 0.1, log=True)
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _zero_scaling(layer: nn.Module) -> nn.Module:
    with torch.no_grad():
        layer.scaling.weight.zero_()
    return layer


def _hyper_grad(layer: nn.Module, *inputs, **kw) -> torch.Tensor:
    """Run `layer` on a Hyper's net_input and return d loss / d hyper.raw."""
    hyper = Hyper(SPACE)
    hb = hyper.batch(B)
    layer(*inputs, hb.net_input, **kw).square().mean().backward()
    return hyper.raw.grad


# --- linear ---------------------------------------------------------------------------------


def test_linear_zero_scaling_and_plain_equal_nn_linear():
    stn, ref = _zero_scaling(STNLinear(5, 6, N)), nn.Linear(5, 6)
    ref.load_state_dict({"weight": stn.weight, "bias": stn.bias})
    x, h = torch.randn(B, 5), torch.randn(B, N)
    assert torch.allclose(stn(x, h), ref(x), atol=1e-6)
    plain = STNLinear(5, 6, 0)
    plain.load_state_dict(ref.state_dict())
    assert torch.equal(plain(x, h), ref(x))
    assert not any("hyper" in k for k in plain.state_dict())


def test_linear_fused_equals_two_matmuls():
    lin, x, h = STNLinear(5, 6, N), torch.randn(2, B, 5), torch.randn(B, N)  # (T, B, in) too
    s_w, s_b = (h @ lin.scaling.weight.t()).chunk(2, dim=-1)
    want = x @ lin.weight.t() + lin.bias + s_w * (x @ lin.hyper_weight.t()) + s_b * lin.hyper_bias
    assert torch.allclose(lin(x, h), want, atol=1e-6)
    assert not torch.allclose(lin(x, h), lin(x, None))


def test_linear_gradient_reaches_hyperparameters():
    g = _hyper_grad(STNLinear(5, 6, N), torch.randn(B, 5))
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_bad_n_hyper():
    with pytest.raises(ValueError, match="n_hyper"):
        STNConv2d(2, 3, 3, -1)


# --- conv -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
def test_conv_zero_scaling_and_plain_equal_nn_conv2d(bias):
    stn = _zero_scaling(STNConv2d(3, 5, 3, N, stride=2, padding=1, bias=bias))
    ref = nn.Conv2d(3, 5, 3, stride=2, padding=1, bias=bias)
    ref.load_state_dict({k: v for k, v in stn.state_dict().items() if k in ref.state_dict()})
    x, h = torch.randn(B, 3, 9, 9), torch.randn(B, N)
    assert torch.allclose(stn(x, h), ref(x), atol=1e-6)
    plain = STNConv2d(3, 5, 3, 0, stride=2, padding=1, bias=bias)
    plain.load_state_dict(ref.state_dict())
    assert torch.equal(plain(x, h), ref(x))


def test_conv_fused_equals_two_convs():
    conv, x, h = STNConv2d(3, 5, 3, N, padding=1), torch.randn(B, 3, 6, 6), torch.randn(B, N)
    s_w, s_b = (h @ conv.scaling.weight.t())[:, :, None, None].chunk(2, dim=1)  # (B, 5, 1, 1)
    plain = F.conv2d(x, conv.weight, conv.bias, padding=1)
    hyp = F.conv2d(x, conv.hyper_weight, padding=1)
    want = plain + s_w * hyp + s_b * conv.hyper_bias[:, None, None]
    assert torch.allclose(conv(x, h), want, atol=1e-5)
    assert not torch.allclose(conv(x, h), conv(x, None))


def test_conv_gradient_reaches_hyperparameters():
    g = _hyper_grad(STNConv2d(3, 5, 3, N), torch.randn(B, 3, 6, 6))
    assert torch.isfinite(g).all() and g.abs().sum() > 0


# --- embedding ------------------------------------------------------------------------------


def test_embedding_zero_scaling_and_plain_equal_f_embedding():
    tok, h = torch.randint(0, 20, (7, B)), torch.randn(B, N)
    stn = _zero_scaling(STNEmbedding(20, 6, N))
    assert torch.allclose(stn(tok, h), F.embedding(tok, stn.weight))
    plain = STNEmbedding(20, 6, 0)
    assert torch.equal(plain(tok, h), nn.Embedding.from_pretrained(plain.weight)(tok))
    assert plain.weight.shape == (20, 6)  # the table a tied decoder shares


def test_embedding_hyper_path_and_per_dimension_scaling():
    emb, tok, h = STNEmbedding(20, 6, N), torch.randint(0, 20, (7, B)), torch.randn(B, N)
    s = h @ emb.scaling.weight.t()  # (B, 6), broadcast over T
    want = emb.weight[tok] + s * emb.hyper_weight[tok]
    assert torch.allclose(emb(tok, h), want, atol=1e-6)


def test_embedding_gradient_reaches_hyperparameters():
    g = _hyper_grad(STNEmbedding(20, 6, N), torch.randint(0, 20, (7, B)))
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_embedding_dropout_drops_whole_words_once_per_batch():
    emb = STNEmbedding(50, 8, N)
    tok, h = torch.randint(0, 50, (30, B)), torch.randn(B, N)
    full = emb(tok, h)
    for p in (0.5, torch.tensor(0.5)):
        y = emb(tok, h, dropout=p)
        ratio = y / full  # (T, B, 8): 0 or 2 for a whole word, wherever and in whichever example
        word = {}
        for t, r in zip(tok.flatten().tolist(), ratio.reshape(-1, 8)):
            assert torch.allclose(r, r[0].expand(8))
            word.setdefault(t, set()).add(round(r[0].item(), 4))
        assert all(len(v) == 1 for v in word.values())  # same fate in every example
        assert {v.pop() for v in word.values()} == {0.0, 2.0}
    assert torch.equal(emb(tok, h, dropout=0.0), full)
    assert torch.equal(emb(tok, h, dropout=torch.tensor(0.0)), full)
    emb.eval()
    assert torch.equal(emb(tok, h, dropout=0.5), full)


def test_embedding_dropout_rate_must_be_one_per_batch():
    emb, tok = STNEmbedding(10, 4, 0), torch.randint(0, 10, (3, B))
    with pytest.raises(ValueError, match="one rate per batch"):
        emb(tok, None, dropout=torch.full((B,), 0.1))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        emb(tok, None, dropout=1.5)


def test_keep_mask_rate_and_scale():
    m = keep_mask((400, 500), 0.3)
    assert torch.allclose(m[m != 0], torch.tensor(1 / 0.7))
    assert abs((m == 0).float().mean().item() - 0.3) < 0.01
    assert torch.equal(keep_mask((10, 10), 0.0), torch.ones(10, 10))
    for one in (torch.tensor(1.0), 1.0, torch.tensor(1.5)):  # rate 1 keeps nothing, no 0/0
        assert keep_mask((10,), one).count_nonzero() == 0
    # a rate that rounds to 1 in a low precision keeps nothing either
    assert keep_mask((10,), torch.tensor(0.9999), dtype=torch.float16).count_nonzero() == 0


def test_hyper_biases_start_like_the_plain_ones():
    """The authors' STN and Delta-STN layers draw the hyper path's bias U(+-1/sqrt(fan_in)),
    like the plain bias (not zero)."""
    from stn.lstm import STNLSTM

    torch.manual_seed(0)
    layers = {
        "linear": (STNLinear(64, 300, 2).hyper_bias, 1 / 8),
        "conv": (STNConv2d(4, 300, 3, 2).hyper_bias, 1 / 6),
    }
    lstm = STNLSTM(16, 100, 1, 2).layers[0]
    layers["lstm_ih"] = (lstm.hyper_bias_ih, 1 / 10)
    layers["lstm_hh"] = (lstm.hyper_bias_hh, 1 / 10)
    for name, (b, bound) in layers.items():
        assert b.abs().max() <= bound and b.abs().max() > 0.9 * bound, name
        assert b.std() > bound / 3, name  # spread over the range, not a constant
    assert STNLinear(4, 3, 2, bias=False).hyper_bias is None
