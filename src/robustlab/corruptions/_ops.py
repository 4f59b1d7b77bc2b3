"""Batched image operations shared by the corruptions: padding, filters, resampling, colour.

Every function takes images ``(N, C, H, W)`` (or ``(N, H, W)`` where noted) and works for any size;
border modes follow the libraries the reference corruptions use: ``replicate`` (scipy "nearest"),
``reflect101`` (OpenCV's default, scipy "mirror") and ``symmetric`` (scipy "reflect").
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as OpenCV's RGB2GRAY and PIL's "L"
# up to this many pixels a side, filters are (n, n) matrix products: on one CPU thread 6-8x faster
# than torch's one-channel convolutions at 224-512 px even though the matrices are banded
MATMUL_SIDE = 1024


def border_index(n: int, before: int, after: int, mode: str, device=None) -> Tensor:
    """Source indices of a length-``n`` axis padded by ``before`` / ``after`` in ``mode``."""
    i = torch.arange(-before, n + after, device=device)
    if mode == "replicate" or n == 1:
        return i.clamp(0, n - 1)
    if mode == "reflect101":
        period = 2 * (n - 1)
        i = i % period
        return torch.where(i >= n, period - i, i)
    if mode == "symmetric":
        period = 2 * n
        i = i % period
        return torch.where(i >= n, period - 1 - i, i)
    raise ValueError(f"unknown border mode {mode!r}")


def pad2d(x: Tensor, top: int, bottom: int, left: int, right: int, mode: str) -> Tensor:
    """Pad the last two axes by any amount (larger than the image too) in ``mode``."""
    h, w = x.shape[-2:]
    rows = border_index(h, top, bottom, mode, x.device)
    cols = border_index(w, left, right, mode, x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def filter2d(x: Tensor, kernel: Tensor, mode: str = "reflect101") -> Tensor:
    """Correlate every channel of ``x`` (N, C, H, W) with one 2-D kernel (OpenCV's filter2D).
    Small images use the kernel's exact low-rank split (a sum of separable terms, as matrix
    products); otherwise kernels larger than 7 x 7 go through the FFT."""
    n, c, h, w = x.shape
    kh, kw = kernel.shape
    if kh % 2 and kw % 2 and max(h, w) <= 128:
        u, sv, vh = torch.linalg.svd(kernel.double())
        rank = int((sv > sv[0] * 1e-10).sum())
        if rank * (h + w) < kh * kw:
            return _low_rank(x, u[:, :rank] * sv[:rank], vh[:rank], mode)
    xp = pad2d(x.reshape(n * c, 1, h, w), kh // 2, (kh - 1) // 2, kw // 2, (kw - 1) // 2, mode)
    k = kernel.to(x)
    if kh * kw <= 25:  # shift and add (faster than a one-channel convolution)
        out = sum(
            k[a, b] * xp[..., a : a + h, b : b + w] for a in range(kh) for b in range(kw) if k[a, b]
        )
    elif kh * kw <= 49:
        out = F.conv2d(xp, k[None, None])
    else:  # circular correlation of the padded image; its valid part is the linear one
        size = xp.shape[-2:]
        spec = torch.fft.rfft2(xp) * torch.fft.rfft2(k.flip(0, 1), s=size)
        out = torch.fft.irfft2(spec, s=size)[..., kh - 1 :, kw - 1 :]
    return out.reshape(n, c, h, w)


def _low_rank(x: Tensor, cols_u: Tensor, rows_v: Tensor, mode: str) -> Tensor:
    """``sum_i correlate(x, u_i v_i^T)`` as two matrix products over the stacked axis operators."""
    h, w = x.shape[-2:]
    rank = rows_v.shape[0]
    mh = torch.cat([axis_operator(h, tuple(cols_u[:, i].tolist()), mode) for i in range(rank)])
    mw = torch.cat([axis_operator(w, tuple(rows_v[i].tolist()), mode).T for i in range(rank)])
    t = (mh.to(x) @ x).unflatten(-2, (rank, h))  # (N, C, rank, H, W)
    t = t.transpose(-3, -2).flatten(-2)  # (N, C, H, rank W)
    return t @ mw.to(x)


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> Tensor:
    """scipy.ndimage's Gaussian kernel: radius ``int(truncate * sigma + 0.5)``, normalised."""
    radius = int(truncate * float(sigma) + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


@lru_cache(maxsize=256)
def axis_operator(n: int, kernel: tuple[float, ...], mode: str) -> Tensor:
    """The (n, n) matrix of correlating a length-``n`` axis with ``kernel`` (odd length, centred)
    after padding it in ``mode``."""
    r = len(kernel) // 2
    idx = border_index(n, r, r, mode)
    m = torch.zeros(n, n, dtype=torch.float64)
    k = torch.tensor(kernel, dtype=torch.float64)
    for i in range(n):
        m[i].index_add_(0, idx[i : i + len(kernel)], k)
    return m


def separable(x: Tensor, k_rows: Tensor, k_cols: Tensor, mode: str) -> Tensor:
    """Filter the last two axes of ``x`` (..., H, W) with a row kernel and a column kernel (as
    two matrix products for images up to ``MATMUL_SIDE`` pixels, as convolutions beyond)."""
    shape = x.shape
    h, w = shape[-2:]
    if max(h, w) <= MATMUL_SIDE:
        mh = axis_operator(h, tuple(k_rows.tolist()), mode).to(x)
        mw = axis_operator(w, tuple(k_cols.tolist()), mode).to(x)
        return mh @ x @ mw.T
    x = x.reshape(-1, 1, h, w)
    r, c = len(k_rows) // 2, len(k_cols) // 2
    x = F.conv2d(pad2d(x, r, r, 0, 0, mode), k_rows.to(x).reshape(1, 1, -1, 1))
    x = F.conv2d(pad2d(x, 0, 0, c, c, mode), k_cols.to(x).reshape(1, 1, 1, -1))
    return x.reshape(shape)


def gaussian_blur(
    x: Tensor, sigma: float | tuple[float, float], mode: str = "replicate", truncate: float = 4.0
) -> Tensor:
    """Gaussian filter over the last two axes, as ``scipy.ndimage.gaussian_filter`` (and
    ``skimage.filters.gaussian``, whose default border is ``replicate``)."""
    sy, sx = (sigma, sigma) if np.isscalar(sigma) else sigma
    return separable(x, gaussian_kernel1d(sy, truncate), gaussian_kernel1d(sx, truncate), mode)


def box_blur(x: Tensor, size: int = 3, mode: str = "reflect101") -> Tensor:
    """OpenCV's ``blur``: a normalised ``size`` x ``size`` box filter."""
    k = torch.full((size,), 1.0 / size, dtype=torch.float64)
    return separable(x, k, k, mode)


def zoom_matrix(n: int, factor: float, dtype=torch.float32, device=None) -> Tensor:
    """The (n, n) matrix of ``clipped_zoom`` along one axis: crop the central ``ceil(n / factor)``
    samples, zoom them by ``factor`` with linear interpolation (``scipy.ndimage.zoom``, order 1)
    and keep the first ``n`` outputs (rows past the zoomed length stay zero)."""
    crop = int(math.ceil(n / factor))
    top = (n - crop) // 2
    out = int(round(crop * factor))
    m = torch.zeros(n, n, dtype=torch.float64)
    rows = torch.arange(min(out, n), dtype=torch.float64)
    pos = rows * ((crop - 1) / (out - 1)) if out > 1 else torch.zeros_like(rows)
    lo = pos.floor().clamp(max=max(crop - 2, 0))
    frac = pos - lo
    lo = lo.long()
    hi = (lo + 1).clamp(max=crop - 1)
    idx = torch.arange(len(rows))
    m.index_put_((idx, top + lo), 1 - frac, accumulate=True)
    m.index_put_((idx, top + hi), frac, accumulate=True)
    return m.to(dtype=dtype, device=device)


def clipped_zoom(x: Tensor, factor: float) -> Tensor:
    """Zoom the centre of every image (..., H, W) by ``factor`` (>= 1) and keep the H x W corner:
    as the matrices of ``zoom_matrix`` for small images, beyond as torch's bilinear interpolation
    of the crop with ``align_corners`` (the same sample positions, without the dense products)."""
    h, w = x.shape[-2:]
    if max(h, w) <= 64:
        mh = zoom_matrix(h, factor, x.dtype, x.device)
        mw = zoom_matrix(w, factor, x.dtype, x.device)
        return mh @ x @ mw.T
    ch, cw = int(math.ceil(h / factor)), int(math.ceil(w / factor))
    top, left = (h - ch) // 2, (w - cw) // 2
    size = (int(round(ch * factor)), int(round(cw * factor)))
    crop = x[..., top : top + ch, left : left + cw].reshape(1, -1, ch, cw)
    z = F.interpolate(crop, size=size, mode="bilinear", align_corners=True)[..., :h, :w]
    out = x.new_zeros(x.shape)
    out[..., : z.shape[-2], : z.shape[-1]] = z.reshape(*x.shape[:-2], *z.shape[-2:])
    return out


def gray(x: Tensor) -> Tensor:
    """Luma (N, 1, H, W) of RGB images; grayscale images are returned as they are."""
    if x.shape[1] == 1:
        return x
    w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).reshape(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def shift_gather(x: Tensor, dy: Tensor, dx: Tensor) -> Tensor:
    """Per-image integer shifts with edge replication: ``out[n, :, i, j] = x[n, :, clamp(i - dy[n]),
    clamp(j - dx[n])]`` (the ``shift`` helper of the reference motion blur)."""
    n, c, h, w = x.shape
    rows = (torch.arange(h, device=x.device)[None] - dy[:, None]).clamp(0, h - 1)  # (N, H)
    cols = (torch.arange(w, device=x.device)[None] - dx[:, None]).clamp(0, w - 1)  # (N, W)
    flat = rows[:, :, None] * w + cols[:, None, :]  # (N, H, W)
    return (
        x.reshape(n, c, h * w)
        .gather(2, flat.reshape(n, 1, h * w).expand(n, c, h * w))
        .reshape(n, c, h, w)
    )


def motion_blur(x: Tensor, radius: int, sigma: float, angle: Tensor) -> Tensor:
    """The reference ``_motion_blur``: a one-sided Gaussian line kernel of width ``2 radius + 1``
    along ``angle`` (degrees, one per image), applied as integer shifts with replicated edges; shifts
    past the image end the kernel early (its remaining weight is dropped, as in the reference)."""
    n, _, h, w = x.shape
    width = 2 * radius + 1
    k = torch.exp(-(torch.arange(width, dtype=torch.float64) ** 2) / (2 * sigma**2))
    k = (k / k.sum()).to(x.dtype)
    rad = torch.deg2rad(angle.double())
    py, px = width * torch.sin(rad), width * torch.cos(rad)
    hyp = torch.hypot(py, px)
    i = torch.arange(width, dtype=torch.float64, device=x.device)[None]
    dy = -torch.ceil(i * py[:, None] / hyp[:, None] - 0.5).long()  # (N, width)
    dx = -torch.ceil(i * px[:, None] / hyp[:, None] - 0.5).long()
    alive = ((dy.abs() < h) & (dx.abs() < w)).long().cumprod(1).bool()  # stop at the first miss
    out = torch.zeros_like(x)
    for j in range(width):
        if not alive[:, j].any():
            break
        weight = (k[j] * alive[:, j].to(x.dtype)).reshape(n, 1, 1, 1)
        out += weight * shift_gather(x, dy[:, j], dx[:, j])
    return out


def plasma_fractal(n: int, mapsize: int, wibbledecay: float, gen: torch.Generator) -> Tensor:
    """Diamond-square height maps (n, mapsize, mapsize) in [0, 1], batched (the reference
    ``plasma_fractal``); ``mapsize`` is a power of two."""
    dev = gen.device
    a = torch.zeros(n, mapsize, mapsize, dtype=torch.float64, device=dev)
    step, wibble = mapsize, 100.0

    def wibbled(t: Tensor) -> Tensor:
        u = torch.rand(t.shape, generator=gen, dtype=torch.float64, device=dev)
        return t / 4 + wibble * (u * 2 * wibble - wibble)

    while step >= 2:
        half = step // 2
        corner = a[:, 0::step, 0::step]
        sq = corner + corner.roll(-1, 1)
        sq = sq + sq.roll(-1, 2)
        a[:, half::step, half::step] = wibbled(sq)
        dr = a[:, half::step, half::step]
        ul = a[:, 0::step, 0::step]
        lt = dr + dr.roll(1, 1) + ul + ul.roll(-1, 2)
        a[:, 0::step, half::step] = wibbled(lt)
        tt = dr + dr.roll(1, 2) + ul + ul.roll(-1, 1)
        a[:, half::step, 0::step] = wibbled(tt)
        step //= 2
        wibble /= wibbledecay
    a = a - a.amin((1, 2), keepdim=True)
    return a / a.amax((1, 2), keepdim=True)


def bilinear_sample(x: Tensor, ys: Tensor, xs: Tensor, mode: str = "symmetric") -> Tensor:
    """Sample images (N, C, H, W) at real coordinates ``ys``, ``xs`` (N, H', W') with linear
    interpolation; outside points are mapped back by ``mode`` (``scipy.ndimage.map_coordinates``
    with order 1)."""
    n, c, h, w = x.shape

    def fold(t: Tensor, size: int) -> Tensor:
        if mode == "replicate" or size == 1:
            return t.clamp(0, size - 1)
        period = 2 * size  # symmetric: -0.5 and size - 0.5 are the mirrors
        t = torch.remainder(t + 0.5, period)
        return torch.where(t >= size, period - t, t) - 0.5

    ys, xs = fold(ys, h), fold(xs, w)
    y0, x0 = ys.floor(), xs.floor()
    fy, fx = (ys - y0).to(x.dtype), (xs - x0).to(x.dtype)
    y0, x0 = y0.long(), x0.long()
    y1, x1 = (y0 + 1).clamp(0, h - 1), (x0 + 1).clamp(0, w - 1)
    y0, x0 = y0.clamp(0, h - 1), x0.clamp(0, w - 1)
    flat = x.reshape(n, c, h * w)

    def at(yy: Tensor, xx: Tensor) -> Tensor:
        idx = (yy * w + xx).reshape(n, 1, -1).expand(n, c, -1)
        return flat.gather(2, idx).reshape(n, c, *ys.shape[1:])

    fy, fx = fy[:, None], fx[:, None]
    top = at(y0, x0) * (1 - fx) + at(y0, x1) * fx
    bottom = at(y1, x0) * (1 - fx) + at(y1, x1) * fx
    return top * (1 - fy) + bottom * fy
