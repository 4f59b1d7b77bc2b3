"""Digital corruptions of ImageNet-C (Hendrycks & Dietterich 2019, arXiv:1903.12261): brightness,
contrast, elastic transform, pixelate and the extra saturate (JPEG is in ``jpeg.py``).

Brightness and saturate change V or S in HSV space; with hue fixed, HSV -> RGB is linear in V and
in S, so both are applied in closed form on RGB (the same result as ``skimage.color`` round trips).

Saturate departs from the published parameters at s1-s3: published, s1 and s2 desaturate (S x 0.3,
S x 0.1) and s3-s5 oversaturate (S x 2, S x 5 + 0.1, S x 20 + 0.2). Oversaturation cannot move a
pixel further than to S = 1, so on colourful images s3 changed them less than s2 (and no order of
desaturating and oversaturating steps is monotone for every image); grayscale images (S = 0) were
left unchanged at s1-s3. Here every severity oversaturates with ``a`` and ``b`` both rising,
(1.5, 0.01), (1.75, 0.03), (2, 0.05), then s4 and s5 as published, so the new saturation of every
pixel, and with it its distance to the clean one, grows with severity.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from robustlab.corruptions import _ops
from robustlab.corruptions.base import register

BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)
CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)
ELASTIC = tuple(250 * a for a in (0.05, 0.065, 0.085, 0.1, 0.12))  # alpha (sigma: 1% of the size)
PIXELATE = (0.6, 0.5, 0.4, 0.3, 0.25)
# S -> S * a + b (published: (0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2))
SATURATE = ((1.5, 0.01), (1.75, 0.03), (2, 0.05), (5, 0.1), (20, 0.2))


@register("brightness", "digital", BRIGHTNESS)
def brightness(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    """V -> min(V + c, 1) in HSV (for grayscale: x + c)."""
    v = x.amax(1, keepdim=True)
    v_new = (v + BRIGHTNESS[severity - 1]).clamp(max=1)
    scaled = x * (v_new / v.clamp(min=1e-12))
    return torch.where(v > 0, scaled, v_new.expand_as(x)).clamp(0, 1)


@register("contrast", "digital", CONTRAST)
def contrast(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    """``(x - mean) c + mean`` with the mean of each channel of each image."""
    mean = x.mean((2, 3), keepdim=True)
    return ((x - mean) * CONTRAST[severity - 1] + mean).clamp(0, 1)


@register("elastic_transform", "digital", ELASTIC)
def elastic_transform(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    """A smooth random displacement field (uniform noise filtered by a Gaussian of 1% of the image
    size, scaled by ``alpha``), sampled with linear interpolation and mirrored borders."""
    n, _, h, w = x.shape
    alpha = ELASTIC[severity - 1]
    max_d = h * 0.005
    u = torch.rand((2, n, h, w), generator=gen, dtype=torch.float64, device=x.device)
    u = ((u * 2 - 1) * max_d).to(x.dtype)  # drawn in float64 as before, filtered in x's precision
    d = _ops.gaussian_blur(u, (h * 0.01, w * 0.01), "symmetric", 3.0).double() * alpha
    # sample at (row + dy, col + dx) with mirrored ("reflect") borders: grid_sample's reflection
    # padding without align_corners mirrors about the outer pixel edges, as scipy does
    cols = torch.arange(w, dtype=torch.float64, device=x.device)[None, None, :] + d[0]
    rows = torch.arange(h, dtype=torch.float64, device=x.device)[None, :, None] + d[1]
    grid = torch.stack([(2 * cols + 1) / w - 1, (2 * rows + 1) / h - 1], -1).to(x.dtype)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return out.clamp(0, 1)


@lru_cache(maxsize=64)
def box_matrix(n_in: int, n_out: int) -> Tensor:
    """PIL's BOX resampling from ``n_in`` to ``n_out`` samples (``Image.resize(..., BOX)``)."""
    scale = n_in / n_out
    fscale = max(scale, 1.0)
    support = 0.5 * fscale
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        for j in range(lo, hi):
            t = (j - center + 0.5) / fscale
            m[i, j] = 1.0 if -0.5 < t <= 0.5 else 0.0
        m[i] /= m[i].sum()
    return m


@register("pixelate", "digital", PIXELATE)
def pixelate(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    """Downsample by ``c`` with a box filter and upsample back with nearest neighbours (PIL)."""
    c = PIXELATE[severity - 1]
    h, w = x.shape[-2:]
    sh, sw = max(int(h * c), 1), max(int(w * c), 1)
    mh = box_matrix(h, sh).to(x)
    mw = box_matrix(w, sw).to(x)
    small = mh @ x @ mw.T
    rows = torch.tensor([min(int(math.floor((i + 0.5) * sh / h)), sh - 1) for i in range(h)])
    cols = torch.tensor([min(int(math.floor((j + 0.5) * sw / w)), sw - 1) for j in range(w)])
    return small.index_select(-2, rows.to(x.device)).index_select(-1, cols.to(x.device)).clamp(0, 1)


@register("saturate", "digital", SATURATE, common=False, rgb=True)
def saturate(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    """S -> clip(S a + b) in HSV; gray pixels (S = 0, hue 0) take the red hue, as skimage."""
    a, b = SATURATE[severity - 1]
    v = x.amax(1, keepdim=True)
    s = torch.where(v > 0, (v - x.amin(1, keepdim=True)) / v.clamp(min=1e-12), torch.zeros_like(v))
    s_new = (s * a + b).clamp(0, 1)
    coloured = v - (v - x) * (s_new / s.clamp(min=1e-12))
    grey = torch.cat([v, v * (1 - s_new), v * (1 - s_new)], 1)
    return torch.where(s > 0, coloured, grey).clamp(0, 1)
