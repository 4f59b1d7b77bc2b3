"""Windows (auto_LiRPA's patches, Xu et al. 2020, arXiv:2002.12920) through average pooling and
spatial translations (zero padding, cropping): each ``Generic`` operation recognised once (cached per operation and shape) and
checked against the operation itself, so a window through it (window.py) equals the dense
transpose."""

from __future__ import annotations

import math
import weakref

import torch
from torch import Tensor, nn

from robustlab.bounds.ops.linear import Conv, Generic

_POOLS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def pool_conv(op: Generic, in_shape: tuple[int, ...]):
    """For a ``Generic`` op running ``nn.AvgPool2d`` on (C, H, W) maps: (a depthwise Conv with a
    kernel of ones, the (H_out, W_out) float64 inverse divisors, whether each divisor is a power
    of two), checked against the module on a random map at 1e-12; None otherwise (cached)."""
    m = op.fn
    if not isinstance(m, nn.AvgPool2d):
        return None
    key = tuple(in_shape)
    per_op = _POOLS.setdefault(op, {})
    if key in per_op:
        return per_op[key]
    per_op[key] = None
    c, H, W = in_shape

    def pair(v):
        return (v, v) if isinstance(v, int) else tuple(v)

    k, p = pair(m.kernel_size), pair(m.padding)
    s = pair(m.stride if m.stride is not None else m.kernel_size)
    x = torch.rand(2, c, H, W, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = m(x)
    size = y.shape[2:]
    if m.divisor_override:
        div = torch.full(tuple(size), float(m.divisor_override), dtype=torch.float64)
    else:
        div = divisor(size[0], H, k[0], s[0], p[0], m.count_include_pad)[:, None] * divisor(
            size[1], W, k[1], s[1], p[1], m.count_include_pad
        )
    weight = torch.ones(c, 1, *k, dtype=torch.float64)
    conv = Conv(weight, None, s, p, (1, 1), c)
    # the check: the sum over each window (zero beyond the map) over its divisor
    extra = [max(0, (size[i] - 1) * s[i] + k[i] - (H, W)[i] - 2 * p[i]) for i in range(2)]
    xp = nn.functional.pad(x, (p[1], p[1] + extra[1], p[0], p[0] + extra[0]))
    sums = nn.functional.conv2d(xp, weight, None, s, 0, 1, c)[:, :, : size[0], : size[1]]
    if sums.shape[2:] != size or not torch.allclose(sums / div, y, rtol=1e-12, atol=0):
        return None
    exact = bool((torch.frexp(div)[0] == 0.5).all())
    per_op[key] = (conv, 1 / div, exact)
    return per_op[key]


def divisor(n_out: int, n: int, k: int, s: int, p: int, include_pad: bool) -> Tensor:
    """Per output along one axis: the cells average pooling divides by (PyTorch's rule: the
    window clipped to the padded map when padding counts, to the map itself otherwise)."""
    start = torch.arange(n_out, dtype=torch.float64) * s - p
    end = torch.clamp(start + k, max=n + p)
    if include_pad:
        return end - start
    return end.clamp(max=n) - start.clamp(min=0)


_SHIFTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def translation(op: Generic, in_shape: tuple[int, ...], out_shape: tuple[int, ...]):
    """(dy, dx) when ``op`` maps (C, H, W) maps to (C, H', W') ones by a translation (zero
    padding, cropping): output (c, y, x) = input (c, y - dy, x - dx) where that lies in the map,
    else zero; None otherwise (cached). Proven for a nonnegative linear map (``op.nonneg``) by
    three probes: the ones (each output's weights sum to one or zero), distinct integers x and
    their squares (weights summing to one that reproduce x_j and x_j^2 have zero variance about
    x_j, so they sit on j alone)."""
    key = (tuple(in_shape), tuple(out_shape))
    per_op = _SHIFTS.setdefault(op, {})
    if key in per_op:
        return per_op[key]
    per_op[key] = None
    if not op.nonneg or in_shape[0] != out_shape[0]:
        return None
    n = math.prod(in_shape)
    x = torch.arange(1, n + 1, dtype=torch.float64).reshape(1, *in_shape)
    with torch.no_grad():
        y = op.fn(x)
    if tuple(y.shape[1:]) != tuple(out_shape) or not bool((y > 0).any()):
        return None
    first = int((y.reshape(-1) > 0).nonzero()[0])
    src = int(y.reshape(-1)[first]) - 1
    yo, xo = divmod(first % (out_shape[1] * out_shape[2]), out_shape[2])
    yi, xi = divmod(src % (in_shape[1] * in_shape[2]), in_shape[2])
    shift = (yo - yi, xo - xi)
    with torch.no_grad():
        for probe in (x, x * x, torch.ones_like(x)):
            if not torch.equal(op.fn(probe), _translate(probe, shift, out_shape[1:])):
                return None
    per_op[key] = shift
    return shift


def _translate(x: Tensor, shift: tuple[int, int], size) -> Tensor:
    """``x`` (B, C, H, W) moved by ``shift`` into a zero (B, C, *size) map."""
    dy, dx = shift
    H, W = x.shape[2:]
    return nn.functional.pad(x, (dx, size[1] - W - dx, dy, size[0] - H - dy))
