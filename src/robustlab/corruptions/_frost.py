"""Procedural frost textures, in place of the frost photographs that ImageNet-C overlays.

The photographs are not redistributed here. Each texture is drawn from a fixed seed (so every
machine gets the same five assets): fern-like ice dendrites (a needle with side branches at +-60
degrees, shorter towards the tip) rendered by splatting points, on a cloudy diamond-square
background with a fine grain; its detail is then sharpened (unsharp masking, found by bisection)
until its high-frequency energy (mean squared Laplacian) matches the photograph's, and it is
shifted and scaled per channel to the photograph's mean colour and contrast. The statistics below
were measured on the five photographs the ``imagecorruptions`` package draws from (frost1-frost5;
its frost2 and frost3 are the same photograph, so two of our textures share its statistics).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

# per photograph: RGB mean, RGB standard deviation, high-frequency energy, dendrite density,
# background cloudiness
PHOTOS = (
    ((0.305, 0.585, 0.650), (0.106, 0.065, 0.060), 0.01404, 1.5, 0.8),
    ((0.787, 0.805, 0.841), (0.084, 0.087, 0.089), 0.01206, 4.0, 0.3),
    ((0.787, 0.805, 0.841), (0.084, 0.087, 0.089), 0.01206, 3.0, 0.4),
    ((0.540, 0.599, 0.648), (0.112, 0.112, 0.117), 0.03355, 3.0, 0.5),
    ((0.441, 0.484, 0.528), (0.174, 0.170, 0.163), 0.06735, 3.5, 0.6),
)
SIZE = (320, 480)  # height, width of every texture (the photographs are 315-600 x 485-900)


def _plasma(rng: np.random.Generator, size: int, decay: float = 2.0) -> np.ndarray:
    a = np.zeros((size, size))
    step, wibble = size, 100.0
    while step >= 2:
        half = step // 2
        c = a[0::step, 0::step]
        sq = c + np.roll(c, -1, 0)
        sq = sq + np.roll(sq, -1, 1)
        a[half::step, half::step] = sq / 4 + wibble * rng.uniform(-wibble, wibble, sq.shape)
        dr, ul = a[half::step, half::step], a[0::step, 0::step]
        lt = dr + np.roll(dr, 1, 0) + ul + np.roll(ul, -1, 1)
        a[0::step, half::step] = lt / 4 + wibble * rng.uniform(-wibble, wibble, lt.shape)
        tt = dr + np.roll(dr, 1, 1) + ul + np.roll(ul, -1, 0)
        a[half::step, 0::step] = tt / 4 + wibble * rng.uniform(-wibble, wibble, tt.shape)
        step //= 2
        wibble /= decay
    a -= a.min()
    return a / a.max()


def _segments(rng: np.random.Generator, h: int, w: int, density: float) -> np.ndarray:
    """Line segments (x0, y0, x1, y1, brightness) of fern-like dendrites."""
    segs = []
    n = int(density * h * w / 900)
    for _ in range(n):
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        theta = rng.uniform(0, 2 * np.pi)
        length = rng.gamma(2.0, 9.0) + 3
        bright = rng.uniform(0.4, 1.0)
        dx, dy = np.cos(theta), np.sin(theta)
        segs.append((x0, y0, x0 + dx * length, y0 + dy * length, bright))
        spacing = rng.uniform(1.5, 4.0)
        for t in np.arange(spacing, length, spacing):
            side = 0.55 * (length - t) * rng.uniform(0.3, 1.0)
            px, py = x0 + dx * t, y0 + dy * t
            for sign in (-1, 1):
                a = theta + sign * (np.pi / 3 + rng.normal(0, 0.1))
                segs.append((px, py, px + np.cos(a) * side, py + np.sin(a) * side, bright * 0.7))
    return np.array(segs)


def _render(segs: np.ndarray, h: int, w: int) -> np.ndarray:
    x0, y0, x1, y1, b = segs.T
    length = np.hypot(x1 - x0, y1 - y0)
    k = np.maximum(2, np.ceil(length * 2)).astype(int)
    owner = np.repeat(np.arange(len(segs)), k)
    t = (np.arange(k.sum()) - np.repeat(np.cumsum(k) - k, k)) / np.repeat(k - 1, k)
    px = x0[owner] + t * (x1 - x0)[owner]
    py = y0[owner] + t * (y1 - y0)[owner]
    val = b[owner] * 0.5
    canvas = np.zeros((h + 2, w + 2))
    ix, iy = np.floor(px).astype(int), np.floor(py).astype(int)
    fx, fy = px - ix, py - iy
    for oy, ox, wt in (
        (0, 0, (1 - fy) * (1 - fx)),
        (0, 1, (1 - fy) * fx),
        (1, 0, fy * (1 - fx)),
        (1, 1, fy * fx),
    ):
        yy, xx = iy + oy, ix + ox
        ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        np.add.at(canvas, (yy[ok], xx[ok]), (val * wt)[ok])
    return 1 - np.exp(-1.5 * canvas[:h, :w])


def _laplacian(a: np.ndarray) -> np.ndarray:
    return (
        4 * a[..., 1:-1, 1:-1]
        - a[..., :-2, 1:-1]
        - a[..., 2:, 1:-1]
        - a[..., 1:-1, :-2]
        - a[..., 1:-1, 2:]
    )


def high_frequency_energy(a: np.ndarray) -> float:
    """Mean squared 4-neighbour Laplacian over the last two axes."""
    return float((_laplacian(a) ** 2).mean())


def _colour(chans: np.ndarray, mean, std) -> np.ndarray:
    z = (chans - chans.mean((1, 2), keepdims=True)) / chans.std((1, 2), keepdims=True)
    return np.clip(np.asarray(mean)[:, None, None] + np.asarray(std)[:, None, None] * z, 0, 1)


def _match_detail(chans: np.ndarray, mean, std, target: float) -> np.ndarray:
    """Add ``k`` times the detail (image minus its blur) with ``k`` such that the coloured texture
    has high-frequency energy ``target`` (both energy and variance are quadratic in ``k``)."""
    detail = chans - gaussian_filter(chans, (0, 1.0, 1.0))
    lc, ld = _laplacian(chans), _laplacian(detail)
    lap = [(p * q).mean((1, 2)) for p, q in ((lc, lc), (lc, ld), (ld, ld))]
    cc, dd = chans - chans.mean((1, 2), keepdims=True), detail - detail.mean((1, 2), keepdims=True)
    var = [(p * q).mean((1, 2)) for p, q in ((cc, cc), (cc, dd), (dd, dd))]
    scale = np.asarray(std) ** 2

    def energy(k: float) -> float:
        num = lap[0] + 2 * k * lap[1] + k * k * lap[2]
        den = var[0] + 2 * k * var[1] + k * k * var[2]
        return float((scale * num / den).mean())

    lo, hi = 0.0, 1.0
    while energy(hi) < target and hi < 1e3:
        hi *= 2
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if energy(mid) < target else (lo, mid)
    return _colour(chans + lo * detail, mean, std)


@lru_cache(maxsize=1)
def frost_textures() -> torch.Tensor:
    """The five procedural frost textures, float32 (5, 3, H, W) in [0, 1]."""
    h, w = SIZE
    out = []
    for k, (mean, std, energy, density, cloud) in enumerate(PHOTOS):
        rng = np.random.default_rng(1000 + k)
        crystals = gaussian_filter(_render(_segments(rng, h, w, density), h, w), 0.6)
        clouds = _plasma(rng, 512)[:h, :w]
        grain = gaussian_filter(rng.normal(0, 1, (h, w)), 0.8)
        tex = crystals + cloud * (clouds - 0.5) + 0.15 * grain
        tint = rng.normal(0, 0.04, 3)[:, None, None]  # slight per-channel variation
        chans = tex[None] + tint * (clouds[None] - 0.5)
        out.append(_match_detail(chans, mean, std, energy))
    return torch.from_numpy(np.stack(out)).float()
