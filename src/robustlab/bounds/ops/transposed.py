"""Transposed convolutions in float64 (a convolution's step in CROWN's backward pass, Zhang et
al. 2018, arXiv:1811.00866): PyTorch's float64 convolutions have no oneDNN path, so they are
computed as convolutions per phase of the stride or as one product summed by ``fold``, whichever
benchmarks/conv_backward.py measured faster for the shape."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

CHUNK_BYTES = 2**22  # float64 columns unfolded per chunk of rows (kept in cache; measured)


def conv_transpose(
    x: Tensor,
    w: Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    output_padding: Sequence[int] | None = None,
    groups: int = 1,
    dilation: Sequence[int] | None = None,
    how: str | None = None,
) -> Tensor:
    """``conv_transpose{1,2}d(x, w, None, stride, padding, output_padding, groups, dilation)``.
    PyTorch's float64 convolutions have no oneDNN path and run at about 1/4 of float64 GEMM's
    speed, so float64 takes one of two formulations, chunked over the rows so that the unfolded
    columns stay in cache: ``"phases"`` (per phase of the stride, a convolution of the rows with
    the kernel's taps that reach it, flipped: at stride 1 one convolution, which unfolds the
    rows' C_out channels) or ``"fold"`` (one product with the kernel, whose patches ``fold``
    sums into place: it unfolds the C_in channels); ``_rule`` picks one. Other dtypes keep
    PyTorch's path (float32: oneDNN, whose sums the rigorous mode's rounding bound counts), as do
    other devices (cuDNN has float64 kernels; not measured) and ``how="torch"``."""
    k = len(stride)
    output_padding = tuple(output_padding or (0,) * k)
    dilation = tuple(dilation or (1,) * k)
    args = (tuple(stride), tuple(padding), output_padding, groups, dilation)
    if how == "torch" or (how is None and (x.dtype != torch.float64 or x.device.type != "cpu")):
        f = nn.functional.conv_transpose2d if k == 2 else nn.functional.conv_transpose1d
        return f(x, w, None, *args)
    if k == 1:  # as 2-d of height 1
        args = ((1, *stride), (0, *padding), (0, *output_padding), groups, (1, *dilation))
        return conv_transpose(x.unsqueeze(2), w.unsqueeze(2), *args, how=how).squeeze(2)
    size = transposed_size(x.shape[2:], w.shape[2:], *args)
    step = _FORMS[how or _rule(w, args[0], args[4], groups, size)]
    return _step(x, w, step, args, size)


def _step(x: Tensor, w: Tensor, step, args: tuple, size: list[int]) -> Tensor:
    """``step`` on chunks of x's rows whose unfolded columns fit in about CHUNK_BYTES (PyTorch's
    float64 convolutions unfold every row at once: out of cache, 1.4-4x slower on 200 rows of
    16 x 16 x 16)."""
    groups = args[3]
    cols = (w.shape[0] if step is _phases else w.shape[1] * groups) * w.shape[2:].numel()
    rows = max(1, CHUNK_BYTES // max(1, 8 * cols * x.shape[2:].numel()))
    if rows >= x.shape[0]:
        return step(x, w, *args, size)
    out = x.new_empty(x.shape[0], w.shape[1] * groups, *size)
    for i in range(0, x.shape[0], rows):
        out[i : i + rows] = step(x[i : i + rows], w, *args, size)
    return out


def transposed_size(shape, kernel, stride, padding, output_padding, groups, dilation) -> list[int]:
    """The transposed convolution's output size per spatial axis."""
    return [
        (n - 1) * s - 2 * p + d * (k - 1) + 1 + o
        for n, k, s, p, o, d in zip(
            shape, kernel, stride, padding, output_padding, dilation, strict=True
        )
    ]


def _rule(w: Tensor, stride, dilation, groups: int, size) -> str:
    """The float64 formulation measured faster (benchmarks/conv_backward.py, one thread, CPU
    clock): "phases" at stride 1 without dilation on maps of 128 positions or more when it unfolds
    no more channels than "fold" (C_out <= C_in: 1.3-4.8x PyTorch's; smaller maps lose to its
    per-row overhead, 0.7-0.8x, and a dilated convolution has a slower PyTorch path), else "fold"
    (0.96-1.4x PyTorch's, which computes the same product one row at a time)."""
    plain = all(s == 1 for s in stride) and all(d == 1 for d in dilation)
    if plain and math.prod(size) >= 128 and w.shape[0] <= w.shape[1] * groups:
        return "phases"
    return "fold"


def _phases(x: Tensor, w: Tensor, stride, padding, out_pad, groups: int, dilation, size) -> Tensor:
    """The transposed convolution per phase r of the output (o = s t + r on each axis): output o
    sums x[i] w[k] over i s - p + k d = o, so phase r takes the taps k with (r + p - k d)
    divisible by s, each reading x[t + c_k] with c_k = (r + p - k d) / s (spaced d / gcd(s, d)
    apart): a convolution of x, padded or cropped to the c_k's range, with those taps flipped."""
    n, c_out = x.shape[:2]
    _, c_in_g, kh, kw = w.shape
    c_in = c_in_g * groups
    # (C_in, C_out / groups, kh, kw): each group's kernel transposed
    wt = w.reshape(groups, c_out // groups, c_in_g, kh, kw).transpose(1, 2)
    wt = wt.reshape(c_in, c_out // groups, kh, kw)
    per_axis = [
        _axis_phases(x.shape[2 + i], size[i], w.shape[2 + i], stride[i], padding[i], dilation[i])
        for i in range(2)
    ]
    reached = [(py, px) for py in per_axis[0] for px in per_axis[1] if py[1] and px[1]]
    if not reached:  # no output reads any input: zeros, with fold's graph for autograd
        return _fold(x, w, stride, padding, out_pad, groups, dilation, size)
    if len(per_axis[0]) == len(per_axis[1]) == 1:
        return _phase(x, wt, *reached[0], groups)  # stride 1: one phase
    out = x.new_zeros(n, c_in, *size)  # phases no tap reaches stay zero
    for py, px in reached:
        out[:, :, py[0] :: stride[0], px[0] :: stride[1]] = _phase(x, wt, py, px, groups)
    return out


def _phase(x: Tensor, wt: Tensor, py: tuple, px: tuple, groups: int) -> Tensor:
    """One phase: x padded (or cropped) to its taps' reach, convolved with them."""
    (_, ty, cy, dy), (_, tx, cx, dx) = py, px
    xp = nn.functional.pad(x, (cx[0], cx[1], cy[0], cy[1]))
    return nn.functional.conv2d(xp, wt[:, :, ty][:, :, :, tx], None, 1, 0, (dy, dx), groups)


def _axis_phases(h: int, size: int, k: int, s: int, p: int, d: int) -> list:
    """Per output phase r on one axis (those with outputs): the taps, last first (the flipped
    kernel), the padding (before, after; negative crops) that aligns x with them, and the
    convolution's dilation."""
    out = []
    for r in range(min(s, size)):
        taps = [j for j in range(k - 1, -1, -1) if (r + p - j * d) % s == 0]
        n_out = (size - r + s - 1) // s
        if not taps:
            out.append((r, [], (0, 0), 1))
            continue
        c_lo, c_hi = (r + p - taps[0] * d) // s, (r + p - taps[-1] * d) // s
        pad = (-c_lo, n_out - 1 + c_hi - (h - 1))
        out.append((r, taps, pad, d // math.gcd(s, d)))
    return out


def _fold(x: Tensor, w: Tensor, stride, padding, out_pad, groups: int, dilation, size) -> Tensor:
    """The transposed convolution as one product of each row position with the kernel (the
    patches it spreads to), summed into place by ``fold``."""
    n, c_out, h, wd = x.shape
    kernel = w.shape[2:]
    g = groups
    if g == 1 and h * wd == 1:  # one position per row: one product over all rows
        cols = (x.reshape(n, c_out) @ w.reshape(c_out, -1)).unsqueeze(2)
    elif g == 1:
        cols = w.reshape(c_out, -1).t() @ x.reshape(n, c_out, h * wd)
    else:
        cols = torch.einsum(
            "gok,ngol->ngkl", w.reshape(g, c_out // g, -1), x.reshape(n, g, c_out // g, h * wd)
        )
    cols = cols.reshape(n, w.shape[1] * g * kernel.numel(), h * wd)
    if all(out_pad[i] < stride[i] for i in range(2)):
        return nn.functional.fold(cols, size, kernel, dilation, padding, stride)
    # output padding of a stride or more (dilation > stride): fold's block count would not
    # match, so fold without padding and crop [p, p + size), zeros past the end
    full = [(x.shape[2 + i] - 1) * stride[i] + dilation[i] * (kernel[i] - 1) + 1 for i in range(2)]
    out = nn.functional.fold(cols, full, kernel, dilation, 0, stride)
    ends = [padding[i] + size[i] - full[i] for i in range(2)]
    return nn.functional.pad(out, (-padding[1], ends[1], -padding[0], ends[0]))


_FORMS = {"phases": _phases, "fold": _fold}
