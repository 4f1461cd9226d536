"""Batched data augmentation with a per-example strength (PAPER.md, "Experiments").

Images are float tensors in [0, 1] of shape (B, 3, H, W). Every strength is a (B,) tensor, one
value per example (what `HyperBatch["name"]` returns), or a number for the whole batch. All
examples are transformed at once on the images' device: no per-image Python loop. Strengths are
data (detached, never differentiated). Augmentation belongs to the training objective only: the
caller applies it to training batches, never to validation batches.

Randomness comes from the global RNG, or from `generator` (a `torch.Generator` on the images'
device) so that a result can be repeated.
"""

from __future__ import annotations

import torch
from kornia.enhance import (
    adjust_brightness_accumulative,
    adjust_contrast_with_mean_subtraction,
    adjust_saturation_with_gray_subtraction,
)
from torch import Tensor

from .regularizers import StrengthError, as_strength

__all__ = [
    "apply_color",
    "color_jitter",
    "cutout",
    "cutout_mask",
    "hue_shift",
    "jitter_factors",
    "jitter_order",
]


def _check_images(x: Tensor, op: str) -> None:
    if x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point():
        raise StrengthError(
            f"{op} expects float RGB images of shape (B, 3, H, W) in [0, 1]; "
            f"got {x.dtype} of shape {tuple(x.shape)}"
        )


def _jitter_strength(s: Tensor | float, x: Tensor, name: str, high: float) -> Tensor:
    """(B,) strength clamped into [0, high]; a number outside that range is a user error."""
    if not isinstance(s, Tensor) and not 0.0 <= float(s) <= high:
        raise StrengthError(f"color_jitter: {name} strength must be in [0, {high}], got {s}")
    return as_strength(s, x.shape[0], x, f"{name} strength").clamp(0.0, high)


def _factor(s: Tensor, u: Tensor) -> Tensor:
    """Multiplicative factor ~ U(max(0, 1 - s), 1 + s) from u ~ U(0, 1); exactly 1 where s = 0."""
    lo = (1.0 - s).clamp_min(0.0)
    return lo + (1.0 + s - lo) * u


def jitter_factors(
    x: Tensor,
    brightness: Tensor | float,
    contrast: Tensor | float,
    saturation: Tensor | float,
    hue: Tensor | float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw (4, B) per-example colour factors for images x (B, 3, H, W), as ColorJitter does.

    Rows: brightness, contrast and saturation factors ~ U(max(0, 1 - s), 1 + s) with s in
    [0, 1], and the hue shift ~ U(-s, s) with s in [0, 0.5] (a fraction of the hue circle).
    A strength of 0 gives a factor of exactly 1 (a shift of exactly 0).
    """
    _check_images(x, "color_jitter")
    b = _jitter_strength(brightness, x, "brightness", 1.0)
    c = _jitter_strength(contrast, x, "contrast", 1.0)
    s = _jitter_strength(saturation, x, "saturation", 1.0)
    h = _jitter_strength(hue, x, "hue", 0.5)
    u = torch.rand((4, x.shape[0]), generator=generator, device=x.device, dtype=x.dtype)
    return torch.stack([_factor(b, u[0]), _factor(c, u[1]), _factor(s, u[2]), (2 * u[3] - 1) * h])


def hue_shift(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate the HSV hue of x (B, 3, H, W) in [0, 1] by shift (B,) turns (torchvision's hue).

    The same result as kornia's `adjust_hue` (and torchvision's `adjust_hue`) to about 1e-6,
    written without data-dependent selects: on CPU those HSV round trips spend most of their time
    in `torch.where` over random masks, which made colour jitter miss its speed target.
    """
    mx = x.amax(dim=1)  # (B, H, W) value V
    d = mx - x.amin(dim=1)  # chroma V * S
    r, g, b = x.unbind(1)
    # which channel is the largest, as 0/1 weights (red first, then green: ties as kornia)
    is_r = (r == mx).to(x.dtype)
    is_g = (g == mx).to(x.dtype) * (1 - is_r)
    is_b = 1 - is_r - is_g
    # hue in sixths of a turn (grey pixels: 0 / tiny = 0), then shifted
    h6 = (is_r * (g - b) + is_g * (b - r) + is_b * (r - g)) / d.clamp_min(torch.finfo(x.dtype).tiny)
    h6 = h6 + 2 * is_g + 4 * is_b + 6 * shift.view(-1, 1, 1)
    # back to RGB: channel n in (5, 3, 1) is V - V S clamp(min(k, 4 - k), 0, 1), k = (n + h6) mod 6
    k = h6[:, None] + torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = k - 6 * torch.floor(k / 6)
    return mx[:, None] - d[:, None] * torch.minimum(k, 4 - k).clamp(0, 1)


def _brightness(x: Tensor, f: Tensor) -> Tensor:
    return adjust_brightness_accumulative(x, f)


def _contrast(x: Tensor, f: Tensor) -> Tensor:
    return adjust_contrast_with_mean_subtraction(x, f)


def _saturation(x: Tensor, f: Tensor) -> Tensor:
    return adjust_saturation_with_gray_subtraction(x, f)


def _hue(x: Tensor, f: Tensor) -> Tensor:
    # examples with a shift of 0 come back exactly (the HSV round trip is not bit-exact)
    return torch.where((f == 0).view(-1, 1, 1, 1), x, hue_shift(x, f))


_COLOR_OPS = (_brightness, _contrast, _saturation, _hue)  # the rows of `jitter_factors`


def jitter_order(
    batch: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> Tensor:
    """(B, 4) long: a random permutation of the four colour operations per example (rows of
    `jitter_factors`), as torchvision's ColorJitter shuffles them on every call."""
    u = torch.rand((batch, 4), generator=generator, device=device)
    return u.argsort(dim=1)


def apply_color(x: Tensor, factors: Tensor, order: Tensor | None = None) -> Tensor:
    """Apply (4, B) factors from `jitter_factors` to x (B, 3, H, W) in [0, 1].

    Operations: brightness, contrast, saturation (kornia's torchvision-compatible operations,
    each clamped to [0, 1]) and hue (`hue_shift`). `order` (B, 4) from `jitter_order` gives
    each example its own order; None applies them in that fixed order. Examples with factors
    (1, 1, 1, 0) come back unchanged exactly.
    """
    _check_images(x, "apply_color")
    if factors.shape != (4, x.shape[0]):
        raise StrengthError(
            f"apply_color: factors must be (4, {x.shape[0]}), got {tuple(factors.shape)}"
        )
    if order is None:
        out = x
        for op, f in zip(_COLOR_OPS, factors):
            out = op(out, f)
        return out.clamp(0.0, 1.0)
    if order.shape != (x.shape[0], 4):
        raise StrengthError(f"apply_color: order must be ({x.shape[0]}, 4), got {order.shape}")
    out = x.clone()
    for pos in range(4):  # at each position, each operation on the examples that put it there
        for k, op in enumerate(_COLOR_OPS):
            idx = (order[:, pos] == k).nonzero().squeeze(1)
            if idx.numel():
                out.index_copy_(0, idx, op(out[idx], factors[k, idx]))
    return out.clamp_(0.0, 1.0)


def color_jitter(
    x: Tensor,
    brightness: Tensor | float,
    contrast: Tensor | float,
    saturation: Tensor | float,
    hue: Tensor | float,
    generator: torch.Generator | None = None,
    random_order: bool = True,
) -> Tensor:
    """Per-example colour jitter of x (B, 3, H, W) in [0, 1], as torchvision's ColorJitter draws it.

    Each strength is (B,) or a number: brightness, contrast, saturation in [0, 1], hue in
    [0, 0.5]; see `jitter_factors` for the draws and `apply_color` for the operations, applied
    in a random order per example (ColorJitter's; `random_order=False`: brightness, contrast,
    saturation, hue). Output in [0, 1]; an example whose strengths are all 0 comes back
    unchanged.
    """
    factors = jitter_factors(x, brightness, contrast, saturation, hue, generator)
    order = jitter_order(x.shape[0], generator, x.device) if random_order else None
    return apply_color(x, factors, order)


def _count(v: Tensor | float, x: Tensor, name: str) -> Tensor:
    """Integer-valued strength as a (B,) long tensor; non-integers floored (as HyperBatch does)."""
    t = as_strength(v, x.shape[0], x, f"cutout {name}")
    return torch.floor(t).clamp_min(0).long()


def cutout_mask(size: tuple[int, int], length: Tensor, holes: Tensor, centres: Tensor) -> Tensor:
    """Boolean (B, H, W) mask, True inside any of each example's holes.

    length (B,) and holes (B,) are integer tensors; centres (B, K, 2) holds (row, column) of
    K >= max(holes) candidate holes, of which example b uses the first holes[b]. A hole is the
    square of side length[b] whose rows run from row - length // 2 (so it is centred for odd
    lengths) over length rows, clipped at the borders.
    """
    H, W = size
    B, K = centres.shape[:2]
    top = centres[..., 0] - (length // 2)[:, None]  # (B, K)
    left = centres[..., 1] - (length // 2)[:, None]
    L = length[:, None, None, None]  # (B, 1, 1, 1)
    rows = torch.arange(H, device=centres.device).view(1, 1, H, 1)
    cols = torch.arange(W, device=centres.device).view(1, 1, 1, W)
    in_rows = (rows >= top[..., None, None]) & (rows < top[..., None, None] + L)  # (B, K, H, 1)
    in_cols = (cols >= left[..., None, None]) & (cols < left[..., None, None] + L)  # (B, K, 1, W)
    used = torch.arange(K, device=centres.device)[None, :] < holes[:, None]  # (B, K)
    in_rows = in_rows & used[..., None, None]  # unused holes cover no row (small tensor)
    return (in_rows & in_cols).any(dim=1)  # (B, K, H, W) -> (B, H, W)


def cutout(
    x: Tensor,
    length: Tensor | float,
    holes: Tensor | float,
    generator: torch.Generator | None = None,
    max_holes: int | None = None,
) -> Tensor:
    """Per-example cutout of x (B, C, H, W): holes[b] squares of side length[b] set to 0.

    length and holes are integer-valued (B,) tensors or numbers (non-integers are floored).
    Centres are uniform over the pixels; squares are clipped at the borders and may overlap.
    length 0 or holes 0 leaves an example unchanged. `max_holes`, when given (e.g. the range's
    upper end), avoids reading holes.max() back from the device; holes beyond it are ignored.
    """
    if x.dim() != 4:
        raise StrengthError(f"cutout expects images of shape (B, C, H, W), got {tuple(x.shape)}")
    B, _, H, W = x.shape
    n_len, n_holes = _count(length, x, "length"), _count(holes, x, "holes")
    K = int(n_holes.max()) if max_holes is None else int(max_holes)
    if K < 0:
        raise StrengthError(f"cutout: max_holes must be >= 0, got {max_holes}")
    # draw K centres for every example, whatever its hole count, so draws do not depend on it
    u = torch.rand((B, K, 2), generator=generator, device=x.device)
    centres = torch.floor(u * torch.tensor([H, W], device=x.device)).long()
    centres = torch.minimum(centres, torch.tensor([H - 1, W - 1], device=x.device))
    n_holes = torch.minimum(n_holes, torch.tensor(K, device=x.device))
    mask = cutout_mask((H, W), n_len, n_holes, centres)  # (B, H, W)
    return x.masked_fill(mask[:, None], 0.0)
