"""Windows (auto_LiRPA's patches, Xu et al. 2020, arXiv:2002.12920) through pooling and spatial
translations (zero padding, cropping). Average pooling and translations are ``Generic``
operations, each recognised once (cached per operation and shape) and checked against the
operation itself, so a window through it equals the dense transpose; max pooling's relaxation
moves each coefficient to the input it picks. ``win`` is a ``window.Window`` (window.py imports
this module; a step builds its result with ``win.placed``)."""

from __future__ import annotations

import math
import weakref

import torch
from torch import Tensor, nn

from robustlab.bounds import window_conv
from robustlab.bounds.ops.linear import Conv, Generic
from robustlab.bounds.window_conv import in_frame

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


def avg_pool(op: Generic, in_shape: tuple[int, ...], win):
    """Average pooling's transpose on a window: each row's coefficient divided by its output's
    divisor, then the transpose of a depthwise convolution with a kernel of ones (padding and
    ceil mode: inputs outside the map are dropped by ``window_conv.conv``). Float32 rows only when every
    divisor is a power of two (scaling exact, as the float32 bookkeeping budgets)."""
    pool = pool_conv(op, in_shape)
    if pool is None:
        return None
    conv, inv, exact = pool
    if win.data.dtype != torch.float64 and not exact:
        return None
    b, m, c = win.data.shape[:3]
    if tuple(inv.shape) != tuple(win.frame):
        return None
    shared = b > 1 and win.data.stride(0) == 0 and win.oy.shape[0] == 1
    one = win.placed(win.data[:1], win.oy, win.ox, win.frame) if shared else win
    data = one.data * one.gather(inv.to(win.data.dtype).expand(1, c, *inv.shape))
    if shared:
        data = data.expand(b, *data.shape[1:])
    if tuple(conv.stride) != tuple(conv.weight.shape[2:]):
        return window_conv.conv(conv, win.placed(data, win.oy, win.ox, win.frame), in_shape)
    # kernel = stride: each coefficient copied onto its own block (3x faster than a convolution)
    (ky, kx), (py, px) = conv.stride, conv.padding
    out = data.repeat_interleave(ky, 3).repeat_interleave(kx, 4)
    H, W = in_shape[1:]
    oy, ox = win.oy * ky - py, win.ox * kx - px
    hh, ww = out.shape[3:]
    valid = in_frame(oy, ox, hh, ww, (H, W))
    if not bool(valid.all()):
        out = out * valid
    new = win.placed(out, oy, ox, (H, W))
    return [new.dense() if hh * ww >= H * W else new], win.data.new_zeros(b, m)


def shifted(win, shift: tuple[int, int], in_shape: tuple[int, ...]):
    """A translation's transpose on a window: the window moves back by the shift; its entries
    on cells the translation fills with zero (outside the input map) are dropped."""
    b, m, c, h, w = win.data.shape
    H, W = in_shape[1:]
    oy, ox = win.oy - shift[0], win.ox - shift[1]
    valid = in_frame(oy, ox, h, w, (H, W))
    data = win.data
    if not bool(valid.all()):
        if b > 1 and data.stride(0) == 0 and valid.shape[0] == 1:
            data = (data[:1] * valid).expand(b, -1, -1, -1, -1)
        else:
            data = data * valid
    new = win.placed(data, oy, ox, (H, W))
    return [new.dense() if h * w >= H * W else new], win.data.new_zeros(b, m)


def pool_backward(op, win, l: Tensor, u: Tensor) -> tuple:
    """Max pooling's relaxation (``MaxPool.backward``) on a window: each output's coefficient
    moves to the input its relaxation picks, which lies in the pooling window of that output, so
    the rows keep a window on the input ((h - 1) stride + kernel high)."""
    b, m, c, h, w = win.data.shape
    index, exact, u_max = op.relax_indices(l, u)  # (B, C, Ho * Wo): flat input index
    H, W = l.shape[2:]
    frame = win.frame
    as_map = (index.shape[0], c, *frame)
    idx = win.gather(index.reshape(as_map))  # (B', m, c, h, w)
    ex = win.gather(exact.reshape(as_map).to(win.data.dtype))
    top = win.data.clamp(min=0) + win.data.clamp(max=0) * ex
    bias = (win.data.clamp(max=0) * (1 - ex) * win.gather(u_max.reshape(as_map))).flatten(2)
    iy = win.oy * op.stride[0] - op.padding[0]
    ix = win.ox * op.stride[1] - op.padding[1]
    hh = (h - 1) * op.stride[0] + op.kernel[0]
    ww = (w - 1) * op.stride[1] + op.kernel[1]
    # local position in the input window (outside the frame: zero coefficients, any position)
    ry = (idx // W - iy[..., None, None, None]).clamp(0, hh - 1)
    rx = (idx % W - ix[..., None, None, None]).clamp(0, ww - 1)
    local = (ry * ww + rx).reshape(*idx.shape[:3], -1)
    B = max(b, local.shape[0])
    data = win.data.new_zeros(B, m, c, hh * ww)
    data.scatter_add_(3, local.expand(B, -1, -1, -1), top.expand(B, -1, -1, -1, -1).flatten(3))
    new = win.placed(data.reshape(B, m, c, hh, ww), iy, ix, (H, W))
    return (new.dense() if hh * ww >= H * W else new), bias.sum(-1)
