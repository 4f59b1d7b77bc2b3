"""Coefficient rows kept on their receptive field (the idea of auto_LiRPA's "patches" mode, Xu et
al. 2020, arXiv:2002.12920, Appendix): the bound of one neuron of a convolutional layer depends,
layer by layer back to the input, on a small spatial window only. Backward passes that start from
such neurons carry a ``Window`` (the coefficients on the window, and its position per row) instead
of dense coefficients over the whole feature map, which for a 32 x 32 map is up to 100x less work.

Convolutions, transposed convolutions, nearest and (bi)linear resizing, max and average pooling,
spatial padding and cropping (any selection that translates the map), per-channel affine maps
(BatchNorm, normalisation), residual additions and elementwise relaxations keep a window; anything
else (reshape, linear layers) and any window grown to the size of its map turn it back into dense
coefficients, so every result equals the dense computation's.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from robustlab.bounds import window_pool
from robustlab.bounds.coef import Coef, Dense, wrap
from robustlab.bounds.ops.linear import Add, Affine, Conv, Generic, _cast
from robustlab.bounds.ops.pool import MaxPool
from robustlab.bounds.ops.shape import ConvTranspose, Resize, _direct


@dataclass(frozen=True)
class Window(Coef):
    """Rows whose coefficients on a (C, H, W) node are zero outside a window: row ``r`` of example
    ``b`` has ``data[b, r]`` at positions ``(oy[b, r] + y, ox[b, r] + x)``. Entries that fall
    outside the ``frame`` (H, W) are always zero. ``oy``/``ox`` have a leading dimension of 1 when
    every example shares the rows' positions."""

    data: Tensor  # (batch, rows, C, h, w)
    oy: Tensor  # (batch or 1, rows), int64
    ox: Tensor
    frame: tuple[int, int]
    # the flat frame index of every window position, computed once per window (gathers reuse it)
    _index: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def shape(self) -> torch.Size:
        return self.data.shape

    def __neg__(self) -> Window:
        return Window(-self.data, self.oy, self.ox, self.frame)

    def scaled(self, s: float) -> Window:
        return self if s == 1 else Window(self.data * s, self.oy, self.ox, self.frame)

    def dense(self) -> Tensor:
        """The same coefficients as a dense (batch, rows, C, H, W) tensor."""
        b, m, c = self.data.shape[:3]
        H, W = self.frame
        idx = _flat_index(self, expand=True)
        out = self.data.new_zeros(b, m, c, H * W)
        out.scatter_add_(3, idx, self.data.reshape(b, m, c, -1).expand(b, m, c, idx.shape[3]))
        return out.reshape(b, m, c, H, W)

    def gather(self, t: Tensor) -> Tensor:
        """``t`` (broadcastable to (batch, C, H, W), or (batch, 1, C, H, W)) on each row's window:
        (batch, rows, C, h, w). Positions outside the frame read a border value, which the zero
        coefficients there cancel."""
        b, m, c, h, w = self.data.shape
        if t.dim() == 5 and t.shape[1] > 1:  # one value per row (alpha-CROWN's slopes)
            H, W = self.frame
            B = max(b, t.shape[0], self.oy.shape[0])
            src = t.expand(t.shape[0], m, c, H, W).reshape(t.shape[0], m, c, H * W)
            idx = _flat_index(self, expand=False)[:, :, None, :].expand(B, m, c, h * w)
            return torch.gather(src.expand(B, -1, -1, -1), 3, idx).reshape(B, m, c, h, w)
        if t.dim() == 5:
            t = t[:, 0]
        t = t.expand(t.shape[0], c, *self.frame).reshape(t.shape[0], c, -1)
        B = max(b, t.shape[0], self.oy.shape[0])
        idx = _flat_index(self, expand=False)  # (1 or B, m, h*w)
        src = t[:, None].expand(B, m, c, t.shape[2])
        out = torch.gather(src, 3, idx[:, :, None, :].expand(B, m, c, h * w))
        return out.reshape(B, m, c, h, w)

    # the backward pass's steps (``coef.Coef``): a step that does not keep the window is the
    # dense rows' step on ``dense()``, so every result equals the dense computation's

    def linear(self, op, shapes) -> tuple[list[Coef], Tensor]:
        res = linear_backward(op, self, shapes)
        if res is None:
            return Dense(self.dense()).linear(op, shapes)
        return [wrap(t) for t in res[0]], res[1]

    def activation(self, la, lb, ua, ub, gap, zero_lower_intercept: bool) -> tuple:
        a_in, b = activation_backward(self, la, lb, ua, ub, zero_lower_intercept)
        return a_in, None, b

    def pool(self, op, l: Tensor, u: Tensor, plain: bool) -> tuple:
        if plain and isinstance(op, MaxPool):
            a_in, b = pool_backward(op, self, l, u)
            return wrap(a_in), b, self
        return Dense(self.dense()).pool(op, l, u, plain)

    def add(self, other: Coef) -> Coef:
        return wrap(add(self, other.raw))

    def two_rows(self) -> Window:
        return cat(self, -self)

    def negated(self) -> Window:
        return -self

    def shared(self) -> bool:
        return self.data.shape[0] > 1 and self.data.stride(0) == 0 and self.oy.shape[0] == 1

    def first(self) -> Window:
        return Window(self.data[:1], self.oy, self.ox, self.frame)

    def expand(self, b: int) -> Window:
        return Window(self.data.expand(b, *self.data.shape[1:]), self.oy, self.ox, self.frame)

    def cast(self, dtype: torch.dtype) -> Window:
        return Window(self.data.to(dtype), self.oy, self.ox, self.frame)


def _flat_index(win: Window, expand: bool) -> Tensor:
    """Flat frame index of every window position, clamped into the frame."""
    b, m, c, h, w = win.data.shape
    if "flat" not in win._index:
        win._index["flat"] = _positions(win)
    idx = win._index["flat"]
    if expand:
        return idx[:, :, None, :].expand(b, m, c, h * w)
    return idx


def _positions(win: Window) -> Tensor:
    m, h, w = win.data.shape[1], win.data.shape[3], win.data.shape[4]
    H, W = win.frame
    ys = (win.oy[..., None] + torch.arange(h, device=win.oy.device)).clamp(0, H - 1)
    xs = (win.ox[..., None] + torch.arange(w, device=win.ox.device)).clamp(0, W - 1)
    return (ys[..., :, None] * W + xs[..., None, :]).reshape(ys.shape[0], m, h * w)


def identity_windows(shape: tuple[int, ...], idx: Tensor, batch: int, like: Tensor) -> Window:
    """Rows of the identity for neurons ``idx`` (flat indices into ``shape`` = (C, H, W)): each a
    1 x 1 window. ``idx`` is (rows,) for rows shared by the batch, or (batch, rows)."""
    c_n, H, W = shape
    m = idx.shape[-1]
    ch, y, x = idx // (H * W), (idx // W) % H, idx % W
    rows = idx.reshape(-1, m)
    data = torch.zeros(rows.shape[0], m, c_n, 1, 1, dtype=like.dtype, device=like.device)
    data.scatter_(2, ch.reshape(-1, m, 1, 1, 1), 1.0)
    if rows.shape[0] == 1:
        data = data.expand(batch, -1, -1, -1, -1)
    return Window(data, y.reshape(-1, m), x.reshape(-1, m), (H, W))


def usable(shape: tuple[int, ...]) -> bool:
    """Whether rows on a node of this shape are worth keeping as windows."""
    return len(shape) == 3 and shape[1] * shape[2] > 1


def cat(a: Window, b: Window) -> Window:
    """Rows of ``a`` then rows of ``b`` (same window size)."""
    n = max(a.data.shape[0], b.data.shape[0])
    data = torch.cat([a.data.expand(n, *a.data.shape[1:]), b.data.expand(n, *b.data.shape[1:])], 1)
    k = max(a.oy.shape[0], b.oy.shape[0])

    def both(u, v):
        return torch.cat([u.expand(k, -1), v.expand(k, -1)], 1)

    return Window(data, both(a.oy, b.oy), both(a.ox, b.ox), a.frame)


def add(a: Tensor | Window, b: Tensor | Window) -> Tensor | Window:
    """The sum of two coefficient sets on the same node (windows merged when they line up)."""
    if isinstance(a, Window) and isinstance(b, Window):
        merged = _merge(a, b)
        if merged is not None:
            return merged
    a = a.dense() if isinstance(a, Window) else a
    b = b.dense() if isinstance(b, Window) else b
    return a + b


def _merge(a: Window, b: Window) -> Window | None:
    """Both windows inside their union, when the offset between them is the same for every row
    (as for the two branches of a residual block)."""
    dy, dx = b.oy - a.oy, b.ox - a.ox
    if not (bool((dy == dy.flatten()[0]).all()) and bool((dx == dx.flatten()[0]).all())):
        return None
    dy, dx = int(dy.flatten()[0]), int(dx.flatten()[0])
    (ha, wa), (hb, wb) = a.data.shape[3:], b.data.shape[3:]
    top, left = min(0, dy), min(0, dx)
    h, w = max(ha, dy + hb) - top, max(wa, dx + wb) - left
    if h * w >= math.prod(a.frame):
        return None
    pa = (-left, w - wa + left, -top, h - ha + top)
    pb = (dx - left, w - wb - dx + left, dy - top, h - hb - dy + top)
    data = nn.functional.pad(a.data, pa) + nn.functional.pad(b.data, pb)
    oy, ox = (
        (a.oy + top, a.ox + left)
        if a.oy.shape[0] >= b.oy.shape[0]
        else (b.oy - dy + top, b.ox - dx + left)
    )
    return Window(data, oy, ox, a.frame)


def linear_backward(
    op, win: Window, in_shapes: list[tuple[int, ...]]
) -> tuple[list[Tensor | Window], Tensor] | None:
    """``op``'s transpose applied to a window, or None when it does not keep windows."""
    if isinstance(op, Conv) and op.weight.dim() == 4 and len(in_shapes[0]) == 3:
        return _conv(op, win, in_shapes[0])
    if isinstance(op, ConvTranspose) and op.weight.dim() == 4 and len(in_shapes[0]) == 3:
        return _conv_transpose(op, win, in_shapes[0])
    if isinstance(op, Resize) and op.rows is not None and len(in_shapes[0]) == 3:
        return _resize(op, win, in_shapes[0])
    if isinstance(op, Affine):
        return _affine(op, win)
    if isinstance(op, Add) and all(tuple(s) == (win.shape[2], *win.frame) for s in in_shapes):
        return [win, win.scaled(op.sign)], win.data.new_zeros(win.shape[:2])
    if isinstance(op, Generic) and len(in_shapes[0]) == 3:
        pool = _avg_pool(op, in_shapes[0], win)
        if pool is not None:
            return pool
        shift = window_pool.translation(op, in_shapes[0], (win.shape[2], *win.frame))
        if shift is not None:
            return _shifted(win, shift, in_shapes[0])
    return None


def _avg_pool(op: Generic, in_shape: tuple[int, ...], win: Window):
    """Average pooling's transpose on a window: each row's coefficient divided by its output's
    divisor, then the transpose of a depthwise convolution with a kernel of ones (padding and
    ceil mode: inputs outside the map are dropped by ``_conv``). Float32 rows only when every
    divisor is a power of two (scaling exact, as the float32 bookkeeping budgets)."""
    pool = window_pool.pool_conv(op, in_shape)
    if pool is None:
        return None
    conv, inv, exact = pool
    if win.data.dtype != torch.float64 and not exact:
        return None
    b, m, c = win.data.shape[:3]
    if tuple(inv.shape) != tuple(win.frame):
        return None
    shared = b > 1 and win.data.stride(0) == 0 and win.oy.shape[0] == 1
    one = Window(win.data[:1], win.oy, win.ox, win.frame) if shared else win
    data = one.data * one.gather(inv.to(win.data.dtype).expand(1, c, *inv.shape))
    if shared:
        data = data.expand(b, *data.shape[1:])
    if tuple(conv.stride) != tuple(conv.weight.shape[2:]):
        return _conv(conv, Window(data, win.oy, win.ox, win.frame), in_shape)
    # kernel = stride: each coefficient copied onto its own block (3x faster than a convolution)
    (ky, kx), (py, px) = conv.stride, conv.padding
    out = data.repeat_interleave(ky, 3).repeat_interleave(kx, 4)
    H, W = in_shape[1:]
    oy, ox = win.oy * ky - py, win.ox * kx - px
    hh, ww = out.shape[3:]
    valid = _in_frame(oy, ox, hh, ww, (H, W))
    if not bool(valid.all()):
        out = out * valid
    new = Window(out, oy, ox, (H, W))
    return [new.dense() if hh * ww >= H * W else new], win.data.new_zeros(b, m)


def _shifted(win: Window, shift: tuple[int, int], in_shape: tuple[int, ...]):
    """A translation's transpose on a window: the window moves back by the shift; its entries
    on cells the translation fills with zero (outside the input map) are dropped."""
    b, m, c, h, w = win.data.shape
    H, W = in_shape[1:]
    oy, ox = win.oy - shift[0], win.ox - shift[1]
    valid = _in_frame(oy, ox, h, w, (H, W))
    data = win.data
    if not bool(valid.all()):
        if b > 1 and data.stride(0) == 0 and valid.shape[0] == 1:
            data = (data[:1] * valid).expand(b, -1, -1, -1, -1)
        else:
            data = data * valid
    new = Window(data, oy, ox, (H, W))
    return [new.dense() if h * w >= H * W else new], win.data.new_zeros(b, m)


def _conv(op: Conv, win: Window, in_shape: tuple[int, ...]) -> tuple[list, Tensor]:
    b, m, c, h, w = win.data.shape
    weight = _cast(op.weight, win.data)
    shared = b > 1 and win.data.stride(0) == 0 and win.oy.shape[0] == 1
    data = win.data[:1] if shared else win.data
    matrix = _transpose_matrix(op, weight, c, h, w)
    if matrix is not None:  # small windows: one matrix product (fast in float64 too)
        out = (data.reshape(-1, c * h * w) @ matrix[0]).reshape(-1, *matrix[1])
    else:
        out = nn.functional.conv_transpose2d(
            data.reshape(-1, c, h, w), weight, None, op.stride, 0, 0, op.groups, op.dilation
        )
    H, W = in_shape[1:]
    oy = win.oy * op.stride[0] - op.padding[0]
    ox = win.ox * op.stride[1] - op.padding[1]
    hh, ww = out.shape[2:]
    out = _drop_outside(out.reshape(data.shape[0], m, -1, hh, ww), oy, ox, (H, W))
    if shared:
        out = out.expand(b, -1, -1, -1, -1)
    bias = _bias(op, win)
    new = Window(out, oy, ox, (H, W))
    return [new.dense() if hh * ww >= H * W else new], bias


def _conv_transpose(op: ConvTranspose, win: Window, in_shape: tuple[int, ...]):
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
        a = Window(data, win.oy, win.ox, win.frame).dense().flatten(0, 1)
        a = nn.functional.pad(a, (p[1], p[1], p[0], p[0]))
        hc, wc = [(a.shape[2 + i] - reach[i] - 1) // s[i] + 1 for i in range(2)]
        out = _conv_rows(a, weight, op).reshape(-1, m, weight.shape[0], hc, wc)
        out = out[..., :H, :W]  # output padding >= stride leaves extra rows: cropped
        out = out.expand(b, -1, -1, -1, -1) if shared else out
        bias = _bias(op, win)
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
    out = _drop_outside(out.reshape(n, m, -1, *size), iy, ix, (H, W))
    if shared:
        out = out.expand(b, -1, -1, -1, -1)
    bias = _bias(op, win)
    new = Window(out, iy, ix, (H, W))
    return [new.dense() if size[0] * size[1] >= H * W else new], bias


def _phase_matrices(op: ConvTranspose, weight: Tensor, c: int, h: int, w: int, size):
    """Per phase (oy + p - d (K - 1)) mod s of each axis, the transpose on an (c, h, w) window as
    a (c h w, C_in * size) matrix read off the kernel (cached); None when large. Window row y
    sits r = d (K - 1) + phase (- s if phase > 0) rows past the first input's first output, and
    meets input row i through the kernel tap (y + r - i s) / d."""
    key = ("t", c, h, w, weight.dtype, weight.device, weight.data_ptr(), op.weight._version)
    per_op = _MATRICES.setdefault(op, {})
    if key in per_op:
        return per_op[key]
    s, d, k, g = op.stride, op.dilation, weight.shape[2:], op.groups
    n_in = weight.shape[0]
    if c * h * w * n_in * size[0] * size[1] * s[0] * s[1] > MATRIX_ENTRIES:
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


def _patch_conv(data, win: Window, weight, op, iy, ix, size, reach) -> Tensor:
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


def _resize(op: Resize, win: Window, in_shape: tuple[int, ...]):
    """Resizing's transpose ``R^T A S`` on a window: the rows of R (and S) that the window covers
    touch a run of inputs (R is monotone in position), taken as the input window."""
    b, m, c, h, w = win.data.shape
    shared = b > 1 and win.data.stride(0) == 0 and win.oy.shape[0] == 1
    data = win.data[:1] if shared else win.data
    ry, iy, hh = _local(op.rows.to(data.dtype), win.oy, h)  # (k, m, h, hh)
    rx, ix, ww = _local(op.cols.to(data.dtype), win.ox, w)
    out = (ry.transpose(-1, -2)[:, :, None] @ data) @ rx[:, :, None]  # (k or b, m, c, hh, ww)
    if shared:
        out = out.expand(b, -1, -1, -1, -1)
    H, W = in_shape[1:]
    new = Window(out, iy, ix, (H, W))
    return [new.dense() if hh * ww >= H * W else new], win.data.new_zeros(b, m)


def _local(r: Tensor, o: Tensor, h: int) -> tuple[Tensor, Tensor, int]:
    """For windows of ``h`` rows at ``o`` on the output of ``r`` (n_out, n_in): each window's
    block of ``r`` (k, m, h, size), the first input it touches, and the block's width ``size``
    (the most inputs any window position touches)."""
    n_out, n_in = r.shape
    r, dev = r.to(o.device), o.device
    pos = torch.arange(n_in, device=dev).expand(n_out, n_in)
    first = torch.where(r != 0, pos, n_in).amin(1)
    last = torch.where(r != 0, pos, -1).amax(1)
    starts = torch.arange(-h + 1, n_out, device=dev)  # every window start that overlaps the frame
    span = last[(starts + h - 1).clamp(max=n_out - 1)] - first[starts.clamp(min=0)] + 1
    size = int(span.max())
    start = first[o.clamp(0, n_out - 1)]
    padded = nn.functional.pad(r, (0, size, h, h))  # rows -h.., columns ..n_in + size: zero
    rows = (o + h)[..., None] + torch.arange(h, device=dev)  # (k, m, h)
    cols = start[..., None] + torch.arange(size, device=dev)  # (k, m, size)
    return padded[rows[..., :, None], cols[..., None, :]], start, size


MATRIX_ENTRIES = 2**22  # largest matrix kept per (convolution, window size)
# most multiply-adds of the matrix over the convolution's (measured crossovers, one thread):
# float64 convolutions are slow, float32 ones run on oneDNN (774 rows of 16 x 5 x 5 onto 16
# channels: 3.7 ms against 5.1 for the matrix, 5.4x the work; 3 x 3: 1.9 against 0.9, 2.8x)
MATRIX_WORK = {torch.float64: 8, torch.float32: 4}
_MATRICES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _transpose_matrix(op: Conv, weight: Tensor, c: int, h: int, w: int):
    """The transposed convolution on an (c, h, w) window as a dense matrix (cached), or None
    when it would be large."""
    key = (c, h, w, weight.dtype, weight.device, weight.data_ptr(), op.weight._version)
    per_op = _MATRICES.setdefault(op, {})
    if key in per_op:
        return per_op[key]
    s, d, k = op.stride, op.dilation, weight.shape[2:]
    hh, ww = (h - 1) * s[0] + d[0] * (k[0] - 1) + 1, (w - 1) * s[1] + d[1] * (k[1] - 1) + 1
    n_in = weight.shape[1] * op.groups
    # the matrix multiplies every window entry with every output (hh ww per input channel, all
    # groups), the convolution with its k k taps: past MATRIX_WORK times more, the convolution
    # is faster (float64, one thread: 2.3x at a 10 x 10 window of a 3 x 3 kernel)
    work = MATRIX_WORK.get(weight.dtype, 8) * k.numel()
    if c * h * w * n_in * hh * ww > MATRIX_ENTRIES or hh * ww * op.groups > work:
        per_op[key] = None
        return None
    eye = torch.eye(c * h * w, dtype=weight.dtype, device=weight.device).reshape(-1, c, h, w)
    cols = nn.functional.conv_transpose2d(eye, weight, None, s, 0, 0, op.groups, d)
    if len(per_op) >= 4:  # a few window sizes per convolution: keep memory small
        per_op.pop(next(iter(per_op)))
    per_op[key] = (cols.reshape(c * h * w, -1), (n_in, hh, ww))
    return per_op[key]


def _affine(op: Affine, win: Window) -> tuple[list, Tensor]:
    s, t = op._s(win.data), op._t(win.data)
    s = s if s.dim() < 2 or s.shape[-2:] == (1, 1) else win.gather(s.expand(1, *s.shape[-3:]))
    a_in = win.data * s
    if not bool(t.abs().max() > 0):
        bias = win.data.new_zeros(win.shape[:2])
    elif t.dim() < 2 or t.shape[-2:] == (1, 1):
        bias = (win.data * t).flatten(2).sum(-1)
    else:
        bias = (win.data * win.gather(t.expand(1, *t.shape[-3:]))).flatten(2).sum(-1)
    if a_in.shape != win.data.shape:
        a_in = a_in.expand(win.data.shape)
    return [Window(a_in, win.oy, win.ox, win.frame)], bias


def activation_backward(
    win: Window, la: Tensor, lb: Tensor, ua: Tensor, ub: Tensor | None, zero_lower_intercept: bool
) -> tuple[Window, Tensor | None]:
    """The relaxation step ``a+ la + a- ua`` on a window (relaxations of shape (batch, 1, ...));
    ``ub=None``: the coefficients only (a float32 pass keeps its bias in its tracker)."""
    a = win.data
    neg = a.clamp(max=0)
    # in place on the gathered slopes (a fresh tensor of the result's shape): the same numbers
    a_in = win.gather(la).mul_(a).addcmul_(neg, win.gather(ua - la))
    if ub is None:
        return Window(a_in, win.oy, win.ox, win.frame), None
    bias = (neg * win.gather(ub)).flatten(2).sum(-1)
    if not zero_lower_intercept:
        bias = bias + ((a - neg) * win.gather(lb)).flatten(2).sum(-1)
    return Window(a_in, win.oy, win.ox, win.frame), bias


def pool_backward(op, win: Window, l: Tensor, u: Tensor) -> tuple[Tensor | Window, Tensor]:
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
    new = Window(data.reshape(B, m, c, hh, ww), iy, ix, (H, W))
    return (new.dense() if hh * ww >= H * W else new), bias.sum(-1)


def concretize(win: Window, region) -> Tensor:
    """Lower bound of the rows over the input region (box; an L2 ball as in ``crown.concretize``)."""
    c = win.gather((region.upper + region.lower) / 2)
    r = win.gather((region.upper - region.lower) / 2)
    a = win.data
    value = (a * c).flatten(2).sum(-1) - (a.abs() * r).flatten(2).sum(-1)
    if getattr(region, "l2_eps", None) is not None:
        x0 = win.gather(region.center.to(a.dtype))
        ball = (a * x0).flatten(2).sum(-1) - region.l2_eps * a.flatten(2).norm(dim=2)
        value = torch.maximum(value, ball)
    return value


def _drop_outside(out: Tensor, oy: Tensor, ox: Tensor, frame: tuple[int, int]) -> Tensor:
    """A step's new window data (batch, rows, C, h, w), owned by the step, with its entries
    outside the frame set to zero (in place; untouched where every window lies inside)."""
    h, w = out.shape[3:]
    H, W = frame
    if oy.numel() == 0 or (
        int(oy.min()) >= 0
        and int(oy.max()) + h <= H
        and int(ox.min()) >= 0
        and int(ox.max()) + w <= W
    ):
        return out
    valid = _in_frame(oy, ox, h, w, frame)
    return out.mul_(valid) if valid.shape[0] <= out.shape[0] else out * valid


def _in_frame(oy: Tensor, ox: Tensor, h: int, w: int, frame: tuple[int, int]) -> Tensor:
    """Which cells of (h, w) windows placed at (oy, ox) lie inside the (H, W) frame, as a mask
    broadcasting over the windows' data (..., 1, h, w)."""
    H, W = frame
    ys = oy[..., None] + torch.arange(h, device=oy.device)
    xs = ox[..., None] + torch.arange(w, device=ox.device)
    return ((ys >= 0) & (ys < H))[..., None, :, None] & ((xs >= 0) & (xs < W))[..., None, None, :]


def _bias(op, win: Window) -> Tensor:
    """The rows' constant term from a layer's bias (zero without one): (batch, rows)."""
    if op.bias is None:
        return win.data.new_zeros(win.data.shape[:2])
    return win.data.sum((3, 4)) @ _cast(op.bias, win.data)
