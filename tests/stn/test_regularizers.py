from __future__ import annotations

import pytest
import torch

from stn import regularizers as R
from stn.regularizers import StrengthError

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
RATES = [0.0, 0.2, 0.5, 0.8]


def _gen(device: str, seed: int = 0) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


@pytest.mark.parametrize("device", DEVICES)
def test_zero_strength_is_identity(device):
    x = torch.randn(3, 4, 5, 6, device=device)
    zero = torch.zeros(3, device=device)
    assert torch.equal(R.dropout(x, zero), x)
    assert torch.equal(R.channel_dropout(x, zero), x)
    assert torch.equal(R.input_noise(x, zero), x)
    seq = torch.randn(7, 3, 5, device=device)
    assert torch.equal(R.locked_dropout(seq, zero), seq)
    assert torch.equal(R.dropout(x, 0.0), x)  # a number means the whole batch


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_device_kept(device, dtype):
    p = torch.tensor([0.1, 0.6], device=device)
    x = torch.randn(2, 3, 4, 4, device=device, dtype=dtype)
    seq = torch.randn(5, 2, 3, device=device, dtype=dtype)
    for y, ref in [
        (R.dropout(x, p), x),
        (R.channel_dropout(x, p), x),
        (R.input_noise(x, p), x),
        (R.locked_dropout(seq, p), seq),
    ]:
        assert y.shape == ref.shape and y.dtype == dtype and y.device == ref.device


def test_dropout_kept_fraction_and_mean_per_example():
    p = torch.tensor(RATES)
    x = torch.ones(4, 40_000)
    y = R.dropout(x, p, generator=_gen("cpu"))
    kept = (y != 0).float().mean(dim=1)
    assert torch.allclose(kept, 1 - p, atol=0.01)
    # kept values are scaled by 1/(1-p), so the mean is preserved in expectation
    assert torch.allclose(y[y != 0], (1 / (1 - p))[:, None].expand_as(y)[y != 0])
    assert torch.allclose(y.mean(dim=1), torch.ones(4), atol=0.03)


@pytest.mark.parametrize("kind, x_shape, mask_shape, view", [
    ("dropout", (6, 12, 5, 3), (6, 12, 5, 3), (-1, 1, 1, 1)),
    ("channel_dropout", (6, 12, 5, 3), (6, 12, 1, 1), (-1, 1, 1, 1)),
    ("locked_dropout", (4, 6, 5), (1, 6, 5), (1, -1, 1)),
])  # fmt: skip
def test_dropout_is_its_definition_with_the_same_draw(kind, x_shape, mask_shape, view):
    """x * 1[u < q] / q with q = 1 - clamp(p, 0, 1) and u the uniform draw of the mask's
    shape; 0 where q = 0 (no nan, no inf)."""
    p = torch.tensor([0.0, 0.3, 0.999, 1.0, 1.5, -0.2])
    x = torch.randn(x_shape)
    y = getattr(R, kind)(x, p, generator=_gen("cpu", 3))
    u = torch.rand(mask_shape, generator=_gen("cpu", 3))
    q = (1 - p.clamp(0, 1)).view(view)
    want = x * ((u < q).float() * torch.where(q > 0, 1 / q, 0.0))
    assert torch.equal(y, want)
    assert y.isfinite().all()


def test_rate_one_drops_everything_without_nan():
    y = R.dropout(torch.ones(2, 100), torch.tensor([1.0, 0.0]))
    assert torch.equal(y[0], torch.zeros(100)) and torch.equal(y[1], torch.ones(100))


def test_channel_dropout_zeroes_whole_channels():
    p = torch.tensor(RATES)
    x = torch.ones(4, 2000, 3, 3)
    y = R.channel_dropout(x, p, generator=_gen("cpu"))
    per_channel = y.flatten(2)  # (B, C, H*W)
    # every channel is either all zero or all equal to the inverted scale
    assert torch.equal(per_channel.amin(dim=2), per_channel.amax(dim=2))
    dropped = (per_channel[..., 0] == 0).float().mean(dim=1)
    assert torch.allclose(dropped, p, atol=0.04)


def test_locked_dropout_mask_constant_over_time():
    p = torch.tensor(RATES)
    seq = torch.ones(12, 4, 3000)
    y = R.locked_dropout(seq, p, generator=_gen("cpu"))
    assert torch.equal(y, y[:1].expand_as(y))
    kept = (y[0] != 0).float().mean(dim=1)  # one rate per sequence (dimension 1)
    assert torch.allclose(kept, 1 - p, atol=0.03)


def test_input_noise_per_example_std():
    scale = torch.tensor([0.0, 0.1, 0.3])
    x = torch.full((3, 50_000), 0.5)
    y = R.input_noise(x, scale, generator=_gen("cpu"))
    assert torch.allclose((y - x).std(dim=1), scale, atol=0.005)


def test_input_scaling_multiplies_each_example_by_one_uniform_factor():
    """The authors' CIFAR-10 input scaling (cnn/hypertrain.py): x * U(1/(1+s), 1+s)."""
    s = torch.tensor([0.0, 0.1, 0.3]).repeat_interleave(20_000)
    x = torch.full((len(s), 3, 2, 2), 2.0)
    y = R.input_scaling(x, s, generator=_gen("cpu"))
    factor = y / x
    assert torch.equal(factor, factor[:, :1, :1, :1].expand_as(factor))  # one per example
    f = factor[:, 0, 0, 0].view(3, -1)
    assert torch.equal(f[0], torch.ones(20_000))  # strength 0: unchanged exactly
    for row, v in zip(f[1:], (0.1, 0.3)):
        lo, hi = 1 / (1 + v), 1 + v
        assert lo <= row.min() < lo + 1e-3 and hi - 1e-3 < row.max() <= hi
        assert abs(row.mean().item() - (lo + hi) / 2) < 2e-3  # uniform: the middle on average


def test_generator_repeats_and_strengths_are_detached():
    p = torch.tensor([0.3, 0.7], requires_grad=True)
    x = torch.randn(2, 100, requires_grad=True)
    a = R.dropout(x, p, generator=_gen("cpu", 5))
    b = R.dropout(x, p, generator=_gen("cpu", 5))
    assert torch.equal(a, b)
    assert not torch.equal(a, R.dropout(x, p, generator=_gen("cpu", 6)))
    a.sum().backward()
    assert p.grad is None and x.grad is not None


def test_bad_strength_shape_is_a_value_error():
    with pytest.raises(StrengthError, match=r"one per example"):
        R.dropout(torch.ones(3, 4), torch.ones(2))
    with pytest.raises(ValueError, match=r"\(T, B, C\)"):
        R.locked_dropout(torch.ones(3, 4), torch.ones(3))


def test_ar_tar_equal_direct_computation():
    torch.manual_seed(0)
    h = torch.randn(6, 3, 5)
    alpha = torch.tensor([0.0, 1.0, 2.5])
    ar = sum(alpha[b] * h[:, b].pow(2).mean() for b in range(3)) / 3
    assert torch.allclose(R.ar_penalty(h, alpha), ar)
    tar = sum(alpha[b] * (h[1:, b] - h[:-1, b]).pow(2).mean() for b in range(3)) / 3
    assert torch.allclose(R.tar_penalty(h, alpha), tar)
    # a number is the same coefficient for every sequence
    assert torch.allclose(R.tar_penalty(h, 2.0), 2.0 * (h[1:] - h[:-1]).pow(2).mean())
    assert R.tar_penalty(h[:1], 2.0).item() == 0.0


def test_weight_decay_equals_direct_computation():
    w = [torch.randn(4, 3, requires_grad=True), torch.randn(3)]
    direct = 0.5 * 1e-2 * (w[0].pow(2).sum() + w[1].pow(2).sum())
    assert torch.allclose(R.weight_decay(w, 1e-2), direct)
    per_example = torch.tensor([0.5e-2, 1.5e-2])  # batch mean 1e-2
    assert torch.allclose(R.weight_decay(w, per_example), direct)
    R.weight_decay(w, per_example).backward()
    assert torch.allclose(w[0].grad, 1e-2 * w[0])  # d/dw 0.5 c ||w||^2 = c w
