from __future__ import annotations

import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from kornia.enhance import adjust_hue

from stn import augment as A
from stn.regularizers import StrengthError

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
JITTER = ("brightness", "contrast", "saturation", "hue")


def _gen(device: str = "cpu", seed: int = 0) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _images(b: int = 4, size: int = 16, device: str = "cpu", dtype=torch.float32):
    return torch.rand(b, 3, size, size, generator=_gen(device, 1), device=device).to(dtype)


def _strengths(b: int, device: str, **given: float) -> dict[str, torch.Tensor]:
    return {k: torch.full((b,), given.get(k, 0.0), device=device) for k in JITTER}


@pytest.mark.parametrize("device", DEVICES)
def test_zero_strength_is_identity(device):
    x = _images(device=device)
    zero = torch.zeros(4, device=device)
    assert torch.equal(A.color_jitter(x, zero, zero, zero, zero), x)
    assert torch.equal(A.cutout(x, torch.full((4,), 5.0, device=device), zero), x)
    assert torch.equal(A.cutout(x, zero, torch.full((4,), 3.0, device=device)), x)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_device_and_range_kept(device, dtype):
    x = _images(8, device=device, dtype=dtype)
    s = _strengths(8, device, brightness=1.0, contrast=1.0, saturation=1.0, hue=0.5)
    y = A.color_jitter(x, **s, generator=_gen(device))
    n = torch.full((8,), 6.0, device=device)
    z = A.cutout(y, n, n / 3, generator=_gen(device))
    for out in (y, z):
        assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
        assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("name", JITTER)
def test_each_jitter_acts_per_example(name):
    x = _images(1).expand(3, -1, -1, -1)  # the same image three times
    s = _strengths(3, "cpu")
    s[name] = torch.tensor([0.0, 0.4, 0.4]) * (0.5 if name == "hue" else 1.0)
    y = A.color_jitter(x, **s, generator=_gen())
    assert torch.equal(y[0], x[0])  # strength 0: unchanged
    assert (y[1] - x[1]).abs().mean() > 1e-3 and (y[2] - x[2]).abs().mean() > 1e-3
    assert (y[1] - y[2]).abs().mean() > 1e-4  # independent draws per example
    assert torch.equal(y, A.color_jitter(x, **s, generator=_gen()))
    assert not torch.equal(y, A.color_jitter(x, **s, generator=_gen(seed=1)))


def test_factor_ranges_follow_colorjitter():
    x = torch.full((4000, 3, 2, 2), 0.5)
    f = A.jitter_factors(x, 0.3, 0.0, 1.0, 0.2, generator=_gen())
    bright, contrast, sat, hue = f
    assert bright.min() >= 0.7 and bright.max() <= 1.3
    assert bright.min() < 0.71 and bright.max() > 1.29  # the whole interval is reached
    assert torch.equal(contrast, torch.ones(4000))
    assert sat.min() >= 0.0 and sat.max() <= 2.0 and sat.max() > 1.95
    assert hue.abs().max() <= 0.2 and hue.min() < -0.19 and hue.max() > 0.19
    # a grey image only feels brightness: 0.5 * factor
    y = A.color_jitter(x, 0.3, 0.0, 0.0, 0.0, generator=_gen())
    assert torch.allclose(y[:, 0, 0, 0], 0.5 * bright)


def test_apply_color_matches_torchvision_per_image():
    x = _images(6)
    f = A.jitter_factors(x, 0.8, 0.8, 0.8, 0.4, generator=_gen())
    ours = A.apply_color(x, f)
    ref = []
    for img, (b, c, s, h) in zip(x, f.T.tolist()):
        img = TF.adjust_brightness(img, b)
        img = TF.adjust_contrast(img, c)
        img = TF.adjust_saturation(img, s)
        ref.append(TF.adjust_hue(img, h))
    # kornia weighs red 0.299 in grey, torchvision 0.2989: equal to about 2e-4
    assert torch.allclose(ours, torch.stack(ref), atol=1e-3)


def test_color_jitter_order_is_random_per_example_as_torchvision():
    """ColorJitter applies its four operations in a random order per call (per image in a data
    loader): each example gets its own permutation, and the result is torchvision's
    operations in that order."""
    order = A.jitter_order(20_000, generator=_gen())
    assert torch.equal(order.sort(dim=1).values, torch.arange(4).expand(20_000, 4))
    assert len({tuple(r) for r in order.tolist()}) == 24  # every permutation occurs
    x = _images(8)
    f = A.jitter_factors(x, 0.8, 0.8, 0.8, 0.4, generator=_gen())
    order = A.jitter_order(8, generator=_gen(seed=2))
    ours = A.apply_color(x, f, order)
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    ref = []
    for img, factors, perm in zip(x, f.T.tolist(), order.tolist()):
        for k in perm:
            img = ops[k](img, factors[k])
        ref.append(img)
    assert torch.allclose(ours, torch.stack(ref), atol=1e-3)
    fixed = A.apply_color(x, f)
    assert (ours - fixed).abs().amax(dim=(1, 2, 3)).max() > 1e-2  # the order matters
    s = _strengths(8, "cpu", brightness=0.8, contrast=0.8, saturation=0.8, hue=0.4)
    drawn = A.color_jitter(x, **s, generator=_gen())  # random_order=True is the default
    g = _gen()
    f2 = A.jitter_factors(x, *s.values(), generator=g)
    assert torch.equal(drawn, A.apply_color(x, f2, A.jitter_order(8, generator=g)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_hue_shift_matches_kornia_and_torchvision(dtype):
    x = _images(8, dtype=dtype)
    x[0], x[1] = 0.0, 1.0  # black and white
    x[2, :, :4] = 0.5  # grey rows
    x[3, 1] = x[3, 0]  # red and green tied for the largest
    x[4, 2] = x[4, 1]  # green and blue tied
    shift = torch.linspace(-0.5, 0.5, 8, dtype=dtype)
    ours = A.hue_shift(x, shift)
    assert torch.allclose(ours, adjust_hue(x, shift * 2 * math.pi), atol=1e-5)
    ref = torch.stack([TF.adjust_hue(img, float(h)) for img, h in zip(x, shift)])
    assert torch.allclose(ours, ref, atol=1e-5)


def test_bad_inputs_are_value_errors():
    x = _images()
    with pytest.raises(StrengthError, match=r"brightness strength must be in \[0, 1.0\]"):
        A.color_jitter(x, 2.0, 0.0, 0.0, 0.0)
    with pytest.raises(StrengthError, match=r"\(B, 3, H, W\)"):
        A.color_jitter(x[:, :1], 0.1, 0.1, 0.1, 0.1)
    with pytest.raises(StrengthError, match=r"one per example"):
        A.cutout(x, torch.ones(3), torch.ones(4))


@pytest.mark.parametrize(
    ("length", "centre", "area"),
    [(5, (8, 8), 25), (4, (8, 8), 16), (1, (3, 9), 1), (5, (0, 0), 9), (6, (15, 8), 4 * 6)],
)
def test_cutout_mask_area(length, centre, area):
    mask = A.cutout_mask(
        (16, 16), torch.tensor([length]), torch.tensor([1]), torch.tensor([[centre]])
    )
    assert int(mask.sum()) == area


def test_cutout_mask_odd_side_is_centred():
    mask = A.cutout_mask((16, 16), torch.tensor([5]), torch.tensor([1]), torch.tensor([[[8, 3]]]))
    expected = torch.zeros(1, 16, 16, dtype=torch.bool)
    expected[0, 6:11, 1:6] = True
    assert torch.equal(mask, expected)


def test_cutout_mask_hole_count_respected():
    centres = torch.tensor([[[2, 2], [12, 12], [2, 12]]]).expand(4, -1, -1)
    mask = A.cutout_mask((16, 16), torch.full((4,), 3), torch.tensor([0, 1, 2, 3]), centres)
    assert mask.flatten(1).sum(dim=1).tolist() == [0, 9, 18, 27]


def test_cutout_removes_the_asked_area():
    x = torch.rand(3, 3, 40, 40) * 0.9 + 0.1  # no pixel is zero before cutout
    length, holes = torch.tensor([0.0, 3.0, 7.0]), torch.tensor([2.0, 1.0, 0.0])
    y = A.cutout(x, length, holes, generator=_gen())
    zeroed = y == 0  # (B, C, H, W)
    assert torch.equal(zeroed, zeroed[:, :1].expand_as(zeroed))  # every channel alike
    assert torch.equal(y[0], x[0]) and torch.equal(y[2], x[2])
    n = int(zeroed[1, 0].sum())
    assert 4 <= n <= 9  # one 3x3 hole, possibly clipped at a corner down to 2x2
    assert torch.equal(y[1][~zeroed[1]], x[1][~zeroed[1]])  # nothing else touched


def test_cutout_integers_floored_and_repeatable():
    x = torch.rand(2, 3, 24, 24) + 0.1
    a = A.cutout(x, torch.tensor([3.9, 5.0]), torch.tensor([2.7, 1.0]), generator=_gen(seed=3))
    b = A.cutout(x, torch.tensor([3.0, 5.0]), torch.tensor([2.0, 1.0]), generator=_gen(seed=3))
    assert torch.equal(a, b)
    c = A.cutout(x, 3, 2, generator=_gen(seed=3), max_holes=4)
    assert torch.equal(c, A.cutout(x, 3, 2, generator=_gen(seed=3), max_holes=4))
    assert int((c[0, 0] == 0).sum()) <= 2 * 9
