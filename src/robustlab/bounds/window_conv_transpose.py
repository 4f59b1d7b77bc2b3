"""Windows (auto_LiRPA's patches, Xu et al. 2020, arXiv:2002.12920) through a transposed
convolution's transpose (a convolution): one cached matrix product per phase of the windows'
positions, else each phase's windows padded alike and convolved. ``win`` is a ``window.Window``
(window.py imports this module; a step builds its result with ``win.placed``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustlab.bounds import window_conv
from robustlab.bounds.ops.linear import _cast
from robustlab.bounds.ops.shape import ConvTranspose, _direct
from robustlab.bounds.window_conv import bias_rows, drop_outside, matrices


def conv_transpose(op: ConvTranspose, win, in_shape: tuple[int, ...]):
    """The transposed convolution's transpose (a convolution) on a window. Input ``i`` reaches the
    outputs ``i s - p + k d``, so an output window [oy, oy + h) depends on the inputs from
    ceil((oy + p - d (K - 1)) / s) on, at most (h - 1 + d (K - 1)) // s + 1 of them. The window is
    placed in an output patch aligned with those inputs' first reached output (its offset there
    depends on oy modulo the stride) and convolved."""
    b, m, c, h, w = win.data.shape
    weight = _cast(op.weight, win.data)
    shared = b > 1 and win.data.stride(0) == 0 and win.oy.shape[0] == 1
    data = win.data[:1] if shared else win.data
    s, p, d = op.stride, op.padding, op.dilation
    reach = [d[i] * (weight.shape[2 + i] - 1) for i in range(2)]
    size = [(n - 1 + reach[i]) // s[i] + 1 for i, n in enumerate((h, w))]  # input window
    H, W = in_shape[1:]
    if size[0] * size[1] >= H * W:  # the rows reach every input: the dense step, as one product
        a = win.placed(data, win.oy, win.ox, win.frame).dense().flatten(0, 1)
        a = nn.functional.pad(a, (p[1], p[1], p[0], p[0]))
        hc, wc = [(a.shape[2 + i] - reach[i] - 1) // s[i] + 1 for i in range(2)]
        out = _conv_rows(a, weight, op).reshape(-1, m, weight.shape[0], hc, wc)
        out = out[..., :H, :W]  # output padding >= stride leaves extra rows: cropped
        out = out.expand(b, -1, -1, -1, -1) if shared else out
        bias = bias_rows(op, win)
        return [out], bias
    iy = -((reach[0] - p[0] - win.oy) // s[0])  # ceil((oy + p - reach) / s)
    ix = -((reach[1] - p[1] - win.ox) // s[1])
    mats = _phase_matrices(op, weight, c, h, w, size)
    if mats is not None:  # one matrix product per phase of the window (oy mod the stride)
        n = data.shape[0]
        flat = data.reshape(n, m, c * h * w)
        phase_y = (win.oy + p[0] - reach[0]) % s[0]
        phase_x = (win.ox + p[1] - reach[1]) % s[1]
        out = flat.new_zeros(n, m, weight.shape[0] * size[0] * size[1])
        for (a, e), mat in mats.items():
            sel = ((phase_y == a) & (phase_x == e)).expand(n, m)
            if bool(sel.any()):
                out[sel] = flat[sel] @ mat
    else:
        out = _patch_conv(data, win, weight, op, iy, ix, size, reach)
        n = out.shape[0] // m
    out = drop_outside(out.reshape(n, m, -1, *size), iy, ix, (H, W))
    if shared:
        out = out.expand(b, -1, -1, -1, -1)
    bias = bias_rows(op, win)
    new = win.placed(out, iy, ix, (H, W))
    return [new.dense() if size[0] * size[1] >= H * W else new], bias


def _phase_matrices(op: ConvTranspose, weight: Tensor, c: int, h: int, w: int, size):
    """Per phase (oy + p - d (K - 1)) mod s of each axis, the transpose on an (c, h, w) window as
    a (c h w, C_in * size) matrix read off the kernel (cached); None when large. Window row y
    sits r = d (K - 1) + phase (- s if phase > 0) rows past the first input's first output, and
    meets input row i through the kernel tap (y + r - i s) / d."""
    key = ("t", c, h, w, weight.dtype, weight.device, weight.data_ptr(), op.weight._version)
    per_op = matrices(op)
    if key in per_op:
        return per_op[key]
    s, d, k, g = op.stride, op.dilation, weight.shape[2:], op.groups
    n_in = weight.shape[0]
    if c * h * w * n_in * size[0] * size[1] * s[0] * s[1] > window_conv.MATRIX_ENTRIES:
        per_op[key] = None
        return None
    cg, og = c // g, n_in // g
    full = weight.new_zeros(c, n_in, k[0] + 1, k[1] + 1)  # tap k: zero (no tap)
    for j in range(g):
        full[j * cg : (j + 1) * cg, j * og : (j + 1) * og, : k[0], : k[1]] = weight[
            j * og : (j + 1) * og
        ].transpose(0, 1)

    def taps(axis: int, n: int, phase: int) -> Tensor:
        r = d[axis] * (k[axis] - 1) + phase - (s[axis] if phase else 0)
        t = torch.arange(n, device=weight.device)[:, None] + r
        t = t - s[axis] * torch.arange(size[axis], device=weight.device)
        ok = (t >= 0) & (t % d[axis] == 0) & (t // d[axis] < k[axis])
        return torch.where(ok, t // d[axis], k[axis])  # (n, size)

    mats = {}
    for a in range(s[0]):
        for e in range(s[1]):
            ty, tx = taps(0, h, a), taps(1, w, e)
            mat = full[:, :, ty[:, :, None, None], tx[None, None]]  # (c, C_in, h, hh, w, ww)
            mats[(a, e)] = mat.permute(0, 2, 4, 1, 3, 5).reshape(c * h * w, -1)
    if len(per_op) >= 4:
        per_op.pop(next(iter(per_op)))
    per_op[key] = mats
    return mats


def _patch_conv(data, win, weight, op, iy, ix, size, reach) -> Tensor:
    """The transpose on large windows: each window placed in an output patch aligned with its
    first input's first output, then convolved. A window row y sits at patch row y + delta with
    delta = oy + p - iy s = reach - ((reach - p - oy) mod s): one of s values, so the rows of
    each phase are padded alike (no gather) and convolved at once. (rows, C_in, *size)."""
    m, c, h, w = data.shape[1:]
    s, p = op.stride, op.padding
    patch = [(size[i] - 1) * s[i] + reach[i] + 1 for i in range(2)]
    n = max(data.shape[0], win.oy.shape[0])
    dy = (win.oy - iy * s[0] + p[0]).expand(n, m).reshape(-1)
    dx = (win.ox - ix * s[1] + p[1]).expand(n, m).reshape(-1)
    flat = data.expand(n, -1, -1, -1, -1).reshape(n * m, c, h, w)
    key = dy * (reach[1] + s[1] + 1) + dx
    phases = torch.unique(key)
    out = None
    for k in phases.tolist():
        sel = (key == k).nonzero()[:, 0] if len(phases) > 1 else None
        x = flat if sel is None else flat.index_select(0, sel)
        ty, tx = int(dy[0 if sel is None else sel[0]]), int(dx[0 if sel is None else sel[0]])
        # negative padding crops entries that reach no input
        x = nn.functional.pad(x, (tx, patch[1] - w - tx, ty, patch[0] - h - ty))
        y = _conv_rows(x, weight, op)
        if sel is None:
            return y
        if out is None:
            out = y.new_empty(n * m, *y.shape[1:])
        out.index_copy_(0, sel, y)
    return out


def _conv_rows(x: Tensor, weight: Tensor, op) -> Tensor:
    """``conv2d(x, weight)`` at op's stride, dilation and groups, no padding: float32 by a direct
    or GEMM convolution where PyTorch picks one (the float32 bookkeeping's error model: plain
    sums of products), else (float64, or a fast algorithm) as one product."""
    if x.dtype == torch.float32 and _direct(x, weight, op, (0, 0)):
        return nn.functional.conv2d(x, weight, None, op.stride, 0, op.dilation, op.groups)
    return _conv_as_product(x, weight, op.stride, op.dilation, op.groups)


def _conv_as_product(x: Tensor, weight: Tensor, s, d, groups: int) -> Tensor:
    """``conv2d(x, weight, stride=s, dilation=d, groups=groups)`` (no padding) as one matrix
    product over every sample and position: float64 convolutions of many small maps are slow."""
    n, g = x.shape[0], groups
    cols = nn.functional.unfold(x, weight.shape[2:], d, 0, s)  # (n, c k k, positions)
    cols = cols.reshape(n, g, -1, cols.shape[-1])
    return torch.einsum("ngkl,gok->ngol", cols, weight.reshape(g, weight.shape[0] // g, -1))
