"""Blur corruptions of ImageNet-C (Hendrycks & Dietterich 2019, arXiv:1903.12261): defocus, glass,
motion and zoom blur, and the extra Gaussian blur. Parameters are in pixels, as published, except
glass blur's shuffle iterations: published 2, 1, 3, 2, 2, here 2, 2, 3, 3, 3, so that its sigma,
shuffle distance and iterations all rise or stay with severity (with one shuffle pass at s2 the
distance to the clean image fell below s1's on smooth images, and s3 -> s4 nearly did)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from robustlab.corruptions import _ops
from robustlab.corruptions.base import register

DEFOCUS = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))  # disk radius, alias blur
# sigma, delta, iterations (published iterations: 2, 1, 3, 2, 2)
GLASS = ((0.7, 1, 2), (0.9, 2, 2), (1, 2, 3), (1.1, 3, 3), (1.5, 4, 3))
MOTION = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))  # radius, sigma
ZOOM = (  # the zoom factors averaged, as np.arange(1, stop, step)
    (1.11, 0.01),
    (1.16, 0.01),
    (1.21, 0.02),
    (1.26, 0.02),
    (1.31, 0.03),
)
GAUSSIAN = (1, 2, 3, 4, 6)


def disk(radius: int, alias_blur: float) -> Tensor:
    """The reference's anti-aliased disk kernel: a normalised binary disk (17 x 17 up to radius 8)
    smoothed by a 3 x 3 (5 x 5 above radius 8) Gaussian of sigma ``alias_blur``."""
    half, ksize = (8, 3) if radius <= 8 else (radius, 5)
    t = torch.arange(-half, half + 1, dtype=torch.float64)
    d = ((t[:, None] ** 2 + t[None] ** 2) <= radius**2).double()
    d = d / d.sum()
    g = torch.arange(ksize, dtype=torch.float64) - (ksize - 1) / 2
    g = torch.exp(-(g**2) / (2 * alias_blur**2))
    return _ops.separable(d, g / g.sum(), g / g.sum(), "reflect101")


@register("defocus_blur", "blur", DEFOCUS)
def defocus_blur(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    """Convolution with an anti-aliased disk (OpenCV ``filter2D``, reflect-101 borders)."""
    return _ops.filter2d(x, disk(*DEFOCUS[severity - 1]), "reflect101").clamp(0, 1)


def _shuffle(x: Tensor, delta: int, iterations: int, gen: torch.Generator) -> Tensor:
    """The reference's local pixel shuffle: a raster scan (bottom-right to top-left) that swaps
    each pixel with a random neighbour within ``delta``; the same sequential swaps for every image."""
    n, c, h, w = x.shape
    rows, cols = list(range(h - delta, delta, -1)), list(range(w - delta, delta, -1))
    if not rows or not cols:
        return x
    steps = len(rows) * len(cols)
    offsets = torch.randint(
        -delta, delta, (iterations, steps, 2, n), generator=gen, device=gen.device
    ).cpu()
    flat = x.permute(2, 3, 0, 1).reshape(h * w, n, c).cpu().numpy().copy()
    jumps = (offsets[:, :, 1] * w + offsets[:, :, 0]).numpy()  # dy * w + dx, (it, steps, n)
    images = np.arange(n)
    for it in range(iterations):
        k = 0
        for r in rows:
            for col in cols:
                p = r * w + col
                q = p + jumps[it, k]
                k += 1
                here = flat[p].copy()
                flat[p] = flat[q, images]
                flat[q, images] = here
    out = torch.from_numpy(flat).reshape(h, w, n, c).permute(2, 3, 0, 1)
    return out.to(x.device).contiguous()


@register("glass_blur", "blur", GLASS)
def glass_blur(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    """Gaussian blur, 8-bit quantisation, a local pixel shuffle, and a second Gaussian blur."""
    sigma, delta, iterations = GLASS[severity - 1]
    x = torch.floor(_ops.gaussian_blur(x, sigma) * 255) / 255
    x = _shuffle(x, delta, iterations, gen)
    return _ops.gaussian_blur(x, sigma).clamp(0, 1)


@register("motion_blur", "blur", MOTION)
def motion_blur(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    """A line blur of Gaussian weights at a random angle in [-45, 45] degrees per image."""
    radius, sigma = MOTION[severity - 1]
    angle = torch.rand(len(x), generator=gen, dtype=torch.float64, device=x.device) * 90 - 45
    return _ops.motion_blur(x, radius, sigma, angle).clamp(0, 1)


def zoom_factors(severity: int) -> np.ndarray:
    """The zoom factors of ``zoom_blur`` at ``severity`` (exactly the reference's ``np.arange``)."""
    stop, step = ZOOM[severity - 1]
    return np.arange(1, stop, step)


@lru_cache(maxsize=16)
def _zoom_operator(h: int, w: int, severity: int) -> Tensor:
    """The whole zoom blur of an h x w image as one (h w, h w) matrix (for small images)."""
    factors = zoom_factors(severity)
    op = torch.eye(h * w, dtype=torch.float64)
    for z in factors:
        op += torch.kron(
            _ops.zoom_matrix(h, float(z), torch.float64),
            _ops.zoom_matrix(w, float(z), torch.float64),
        )
    return op / (len(factors) + 1)


@register("zoom_blur", "blur", ZOOM)
def zoom_blur(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    """The mean of the image and its centre zoomed by each factor (linear interpolation)."""
    h, w = x.shape[-2:]
    if h * w <= 1024:
        op = _zoom_operator(h, w, severity).to(x)
        return (x.flatten(-2) @ op.T).unflatten(-1, (h, w)).clamp(0, 1)
    factors = zoom_factors(severity)
    out = x.clone()
    for z in factors:
        out += _ops.clipped_zoom(x, float(z))
    return (out / (len(factors) + 1)).clamp(0, 1)


@register("gaussian_blur", "blur", GAUSSIAN, common=False)
def gaussian_blur(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    """A Gaussian filter of standard deviation ``c`` pixels (replicated borders)."""
    return _ops.gaussian_blur(x, GAUSSIAN[severity - 1]).clamp(0, 1)
