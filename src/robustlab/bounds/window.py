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

Here the ``Window`` class (the backward pass's steps as ``coef.Coef`` methods), its geometry and
the elementwise steps; the steps through layers that move windows are in window_conv.py
(convolutions), window_conv_transpose.py (transposed convolutions), window_resize.py and
window_pool.py (pooling, translations), which this module imports: they build their results with
``Window.placed``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from robustlab.bounds import window_pool
from robustlab.bounds.coef import Coef, Dense, wrap
from robustlab.bounds.ops.linear import Add, Affine, Conv, Generic
from robustlab.bounds.ops.pool import MaxPool
from robustlab.bounds.ops.shape import ConvTranspose, Resize
from robustlab.bounds.rounding import SLACK, U, gamma
from robustlab.bounds.window_conv import conv
from robustlab.bounds.window_conv_transpose import conv_transpose
from robustlab.bounds.window_resize import resize


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

    def placed(self, data: Tensor, oy: Tensor, ox: Tensor, frame: tuple[int, int]) -> Window:
        """A window of rows ``data`` at (oy, ox) on an (H, W) ``frame``: how the steps in the
        modules below this one (which do not import it) build their results."""
        return Window(data, oy, ox, frame)

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
            a_in, b = window_pool.pool_backward(op, self, l, u)
            return wrap(a_in), b, self
        return Dense(self.dense()).pool(op, l, u, plain)

    def add(self, other: Coef) -> Coef:
        return other.added_to(self)

    def added_to(self, win: Window) -> Coef:
        """``win + self``: both windows inside their union where they line up."""
        merged = _merge(win, self)
        return Dense(win.dense() + self.dense()) if merged is None else merged

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

    # the accumulators' sums (``coef.Coef``): on the window, small enough to sum in float64
    # where a term is signed

    def concretize(self, region) -> Tensor:
        """Lower bound of the rows over the input region (box; an L2 ball as in
        ``rows.concretize``)."""
        c = self.gather((region.upper + region.lower) / 2)
        r = self.gather((region.upper - region.lower) / 2)
        a = self.data
        value = (a * c).flatten(2).sum(-1) - (a.abs() * r).flatten(2).sum(-1)
        if getattr(region, "l2_eps", None) is not None:
            x0 = self.gather(region.center.to(a.dtype))
            ball = (a * x0).flatten(2).sum(-1) - region.l2_eps * a.flatten(2).norm(dim=2)
            value = torch.maximum(value, ball)
        return value

    def negative(self) -> Window:
        return Window(self.data.clamp(max=0), self.oy, self.ox, self.frame)

    def absdot(self, v: Tensor) -> Tensor:
        a = self.data
        if v.dim() == a.dim():
            v = v[:, 0]
        elif v.dim() == a.dim() - 2:  # no batch dimension
            v = v[None]
        # positive terms: a float32 sum is within gamma_(n+2) of the exact one (n terms, their
        # products, v's rounding to float32), which SLACK covers on windows under ~16000 entries
        scale = max(SLACK, 1 + gamma(math.prod(a.shape[2:]) + 2))
        return (a.abs() * self.gather(v.to(a.dtype))).flatten(2).sum(-1).double() * scale

    def signed_dot(self, v: Tensor, n: int | None = None) -> Tensor:
        return _sum_below(self.data.double() * self.gather(v))

    def dot_below(self, c: Tensor) -> Tensor:
        return self.signed_dot(c[:, None])

    def gap_step(self, value: Tensor, neg, gap: Tensor, err: Tensor, per_dtype: dict) -> Tensor:
        # in a's precision: two gathers and one pass over each of a- and |a|. The float32
        # <a-, gap> is off by at most gamma_(n+3) <|a|, |gap|> (n terms, their products and
        # gap's own rounding), which joins the error vector; the error sum (positive terms) is
        # at most its float32 value over 1 - gamma
        data = self.data
        k = gamma(math.prod(data.shape[2:]) + 3)
        err = err + k * gap.abs()
        neg = data.clamp(max=0)
        val = (neg * self.gather(gap.to(data.dtype))).flatten(2).sum(-1).double()
        e = (data.abs() * self.gather((err * (1 + 4 * U)).to(data.dtype))).flatten(2).sum(-1)
        return value + val - e.double() / (1 - k) * SLACK

    def shifted_step(self, value: Tensor, neg, gap: Tensor, shift: Tensor, steps: Tensor):
        data = self.data.double()
        neg = data.clamp(max=0)
        val = _sum_below(neg * self.gather(gap))
        val = val + _sum_below(data * self.gather(shift))
        return value + val - (data.abs() * self.gather(steps.double())).flatten(2).sum(-1) * SLACK


def _sum_below(p: Tensor) -> Tensor:
    """A lower bound on the exact sum, per row, of the products whose float64 values are ``p``
    (batch, rows, ...): their float64 sum less ``(n + 2) 2^-52`` of their absolute sum, which
    bounds the products' and the sum's rounding (as ``coef.Dense.dot_below``)."""
    p = p.flatten(2)
    return p.sum(-1) - (p.shape[2] + 2) * 2.0**-52 * p.abs().sum(-1)


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
        return conv(op, win, in_shapes[0])
    if isinstance(op, ConvTranspose) and op.weight.dim() == 4 and len(in_shapes[0]) == 3:
        return conv_transpose(op, win, in_shapes[0])
    if isinstance(op, Resize) and op.rows is not None and len(in_shapes[0]) == 3:
        return resize(op, win, in_shapes[0])
    if isinstance(op, Affine):
        return _affine(op, win)
    if isinstance(op, Add) and all(tuple(s) == (win.shape[2], *win.frame) for s in in_shapes):
        return [win, win.scaled(op.sign)], win.data.new_zeros(win.shape[:2])
    if isinstance(op, Generic) and len(in_shapes[0]) == 3:
        pool = window_pool.avg_pool(op, in_shapes[0], win)
        if pool is not None:
            return pool
        shift = window_pool.translation(op, in_shapes[0], (win.shape[2], *win.frame))
        if shift is not None:
            return window_pool.shifted(win, shift, in_shapes[0])
    return None


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
