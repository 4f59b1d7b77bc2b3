"""JPEG compression of ImageNet-C (Hendrycks & Dietterich 2019, arXiv:1903.12261), as a batched
baseline JPEG codec in torch.

It follows what PIL's ``save(..., 'JPEG', quality=q)`` and decoding do with libjpeg's defaults:
JFIF YCbCr, 4:2:0 chroma subsampling (2 x 2 means), 8 x 8 DCT quantised with the Annex K tables
scaled by the IJG quality formula, and "fancy" (triangular) chroma upsampling on decoding. Entropy
coding is lossless and left out. Grayscale images are coded as the luma channel alone (what PIL's
L -> RGB -> JPEG -> L round trip amounts to).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

from robustlab.corruptions import _ops
from robustlab.corruptions.base import register

QUALITY = (25, 18, 15, 10, 7)

LUMA_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
CHROMA_TABLE = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
    *((99,) * 8 for _ in range(4)),
)


def quant_table(base: tuple, quality: int) -> Tensor:
    """The IJG scaling of a base table to ``quality`` (1..100), limited to 1..255 (baseline)."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    t = (torch.tensor(base, dtype=torch.int64) * scale + 50) // 100
    return t.clamp(1, 255).double()


@lru_cache(maxsize=1)
def dct_matrix() -> Tensor:
    """The orthonormal 8-point DCT-II matrix (JPEG's forward DCT is ``D @ block @ D.T``)."""
    k = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * k[None] + 1) * k[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return d


def _code(plane: Tensor, table: Tensor) -> Tensor:
    """Level shift, blockwise DCT, quantise, dequantise, inverse DCT; ``plane`` (N, H, W) with H
    and W multiples of 8, values 0..255. Blocks are rows of 64 values and the 2-D DCT one
    64 x 64 matrix (the Kronecker product of the 1-D ones)."""
    n, h, w = plane.shape
    d = dct_matrix().to(plane)
    d2 = torch.kron(d, d)
    blocks = (plane - 128).reshape(n, h // 8, 8, w // 8, 8).transpose(2, 3).reshape(-1, 64)
    q = table.to(plane).reshape(64)
    coef = torch.round(blocks @ d2.T / q) * q
    out = (coef @ d2).reshape(n, h // 8, w // 8, 8, 8).transpose(2, 3).reshape(n, h, w)
    return torch.round(out + 128).clamp(0, 255)


def _fancy_up(c: Tensor) -> Tensor:
    """libjpeg's h2v2 fancy upsampling: each output sample is 3/4 the nearer and 1/4 the farther
    input sample along each axis, edges replicated."""
    for axis in (-2, -1):
        n = c.shape[axis]
        idx = torch.arange(n, device=c.device)
        prev = c.index_select(axis, (idx - 1).clamp(min=0))
        nxt = c.index_select(axis, (idx + 1).clamp(max=n - 1))
        shape = list(c.shape)
        shape[axis] = 2 * n
        c = torch.stack([0.75 * c + 0.25 * prev, 0.75 * c + 0.25 * nxt], axis).reshape(shape)
    return c


def jpeg(x: Tensor, quality: int) -> Tensor:
    """JPEG-compress and decode float images (N, C, H, W) in [0, 1] at ``quality``."""
    n, c, h, w = x.shape
    ph, pw = -h % 16, -w % 16
    v = _ops.pad2d(x.float() * 255, 0, ph, 0, pw, "replicate")
    luma_q = quant_table(LUMA_TABLE, quality)
    if c == 1:
        y = _code(torch.round(v[:, 0]), luma_q)
        return (y[:, None, :h, :w] / 255).to(x.dtype)
    r, g, b = v[:, 0], v[:, 1], v[:, 2]
    y = torch.round(0.299 * r + 0.587 * g + 0.114 * b)
    cb = torch.round(-0.168736 * r - 0.331264 * g + 0.5 * b + 128)
    cr = torch.round(0.5 * r - 0.418688 * g - 0.081312 * b + 128)
    hh, hw = v.shape[-2] // 2, v.shape[-1] // 2
    chroma = torch.stack([cb, cr], 1).reshape(n, 2, hh, 2, hw, 2).mean((3, 5))
    chroma = _code(torch.round(chroma).reshape(n * 2, hh, hw), quant_table(CHROMA_TABLE, quality))
    chroma = _fancy_up(chroma.reshape(n, 2, hh, hw))
    y = _code(y, luma_q)
    cb, cr = chroma[:, 0] - 128, chroma[:, 1] - 128
    rgb = torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1)
    return (torch.round(rgb).clamp(0, 255)[..., :h, :w] / 255).to(x.dtype)


@register("jpeg_compression", "digital", QUALITY)
def jpeg_compression(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    """JPEG at quality ``c`` (25, 18, 15, 10, 7)."""
    return jpeg(x, QUALITY[severity - 1])
