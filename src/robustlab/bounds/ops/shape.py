"""Linear operations beyond Linear / Conv: transposed convolution, products with a constant matrix,
concatenation with constants, selection by a constant mask, centring, pairwise differences (the
softmax's), and ``per_sample``: a shape function (slicing, resizing, reduction) checked to act on
each sample alone."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustlab.bounds.ops.base import Bounds, LinearOp, vjp_backward
from robustlab.bounds.ops.linear import Affine, Generic, _cast, _unbroadcast
from robustlab.errors import UnsupportedOperation


def per_sample(fn: Callable[[Tensor], Tensor], example: Tensor, what: str, terms: int | None):
    """``Generic(fn)`` after checking that ``fn`` maps each sample on its own (no mixing of the
    batch dimension): the outputs of a batch of 3 are those of each sample alone."""
    x = torch.randn(3, *example.shape[1:], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = fn(x)
        ok = y.dim() > 0 and y.shape[0] == 3
        ok = ok and all(
            torch.allclose(y[i : i + 1], fn(x[i : i + 1]), equal_nan=True) for i in range(3)
        )
    if not ok:
        raise UnsupportedOperation(f"{what} mixes the batch dimension")
    return Monotone(fn, terms=terms)


class Monotone(Generic):
    """A linear map with nonnegative coefficients: its interval image is ``[fn(l), fn(u)]``
    (exact, and no cancellation: sums of nonnegative lower bounds stay nonnegative)."""

    def ibp(self, b: Bounds) -> Bounds:
        return Bounds(self.fn(b.lower), self.fn(b.upper))


@dataclass(eq=False)
class ScaleShift(Affine):
    """``Affine`` whose interval image is computed entrywise (``l s + t``, ``u s + t``): exact,
    without the cancellation of midpoint and radius when the bounds differ in magnitude."""

    def ibp(self, b: Bounds) -> Bounds:
        s, t = self._s(b.lower), self._t(b.lower)
        lo, hi = b.lower * s, b.upper * s
        return Bounds(torch.minimum(lo, hi) + t, torch.maximum(lo, hi) + t)


@dataclass(eq=False)
class Within(LinearOp):
    """The identity on values known to lie in [lo, hi] (a softmax's probabilities): interval
    bounds are clipped to that range; the linear rules pass through unchanged."""

    lo: float
    hi: float

    def forward(self, x):
        return x

    forward_abs = forward

    def ibp(self, b: Bounds) -> Bounds:
        lo, hi = b.lower.clamp(self.lo, self.hi), b.upper.clamp(self.lo, self.hi)
        return Bounds(torch.minimum(lo, hi), hi)

    def backward(self, A, in_shapes):
        return [A], A.new_zeros(A.shape[:2])

    def rounding_terms(self, out_shape) -> int:
        return 0


@dataclass(eq=False)
class ConvTranspose(LinearOp):
    """1-D or 2-D transposed convolution (zero padding); its transpose is the convolution with the
    same weight. float32 rows are bookkept (tracker.py): the transpose is then a direct or GEMM
    convolution (``_direct``), never Winograd (NNPACK) or FFT."""

    weight: Tensor
    bias: Tensor | None
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    output_padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int

    def rounding_terms(self, out_shape) -> int:
        """Products summed per coefficient by ``backward`` (a convolution over the output's
        channels of a group and the kernel's taps; fewer where the stride skips taps), + 1 for
        the weight's rounding to float32."""
        return self.weight.shape[1] * math.prod(self.weight.shape[2:]) + 1

    def _run(self, x, w, b):
        f = nn.functional.conv_transpose2d if w.dim() == 4 else nn.functional.conv_transpose1d
        return f(
            x, w, b, self.stride, self.padding, self.output_padding, self.groups, self.dilation
        )

    def forward(self, x):
        return self._run(x, _cast(self.weight, x), _cast(self.bias, x))

    def forward_abs(self, r):
        return self._run(r, _cast(self.weight, r).abs(), None)

    def backward(self, A, in_shapes):
        b, m = A.shape[:2]
        w = _cast(self.weight, A)
        f = nn.functional.conv2d if w.dim() == 4 else nn.functional.conv1d
        flat = A.reshape(b * m, *A.shape[2:])
        if A.dtype == torch.float32 and not _direct(flat, w, self):
            a_in = _conv_gemm(flat, w, self)
        else:
            a_in = f(flat, w, None, self.stride, self.padding, self.dilation, self.groups)
        spatial = in_shapes[0][1:]  # output_padding >= stride leaves extra rows: cropped
        a_in = a_in[(..., *(slice(0, n) for n in spatial))].reshape(b, m, *in_shapes[0])
        if self.bias is None:
            return [a_in], A.new_zeros(b, m)
        bias = A.flatten(3).sum(-1) @ _cast(self.bias, A)
        return [a_in], bias


_DIRECT = ("Mkldnn", "Slow2d", "SlowDilated2d")  # oneDNN's direct algorithm, im2col + GEMM


def _direct(x: Tensor, w: Tensor, op: ConvTranspose, padding: tuple | None = None) -> bool:
    """Whether PyTorch computes ``conv2d(x, w)`` (op's padding, or ``padding``) as direct sums
    (oneDNN's direct algorithm, im2col + GEMM: the error model of the float32 bookkeeping); not
    NNPACK (Winograd, FFT)."""
    if w.dim() != 4:
        return False
    pad = list(op.padding if padding is None else padding)
    try:
        got = torch._C._select_conv_backend(
            x, w, None, list(op.stride), pad, list(op.dilation), False, [0, 0],
            op.groups, None,
        )  # fmt: skip
    except (AttributeError, RuntimeError, TypeError):
        return False
    return getattr(got, "name", str(got).rsplit(".", 1)[-1]) in _DIRECT


GEMM_ENTRIES = 2**22  # unfolded entries per chunk of ``_conv_gemm``


def _conv_gemm(x: Tensor, w: Tensor, op: ConvTranspose) -> Tensor:
    """``conv{1,2}d(x, w)`` (op's stride, padding, dilation, groups) as unfold + matrix products:
    each output a plain sum of products (no fast convolution algorithm), in chunks of rows."""
    one = w.dim() == 3
    if one:  # 1-D as 2-D with a height of one
        x, w = x[:, :, None], w[:, :, None]
    st, pad, dil = (tuple(v) for v in (op.stride, op.padding, op.dilation))
    if one:
        st, pad, dil = (1, *st), (0, *pad), (1, *dil)
    n, g = x.shape[0], op.groups
    kh, kw = w.shape[2:]
    hh = (x.shape[2] + 2 * pad[0] - dil[0] * (kh - 1) - 1) // st[0] + 1
    ww = (x.shape[3] + 2 * pad[1] - dil[1] * (kw - 1) - 1) // st[1] + 1
    wg = w.reshape(g, w.shape[0] // g, -1)
    per = max(1, GEMM_ENTRIES // max(1, w.shape[1] * g * kh * kw * hh * ww))
    parts = []
    for s in range(0, n, per):
        cols = nn.functional.unfold(x[s : s + per], (kh, kw), dil, pad, st)
        cols = cols.reshape(cols.shape[0], g, -1, cols.shape[-1])
        parts.append(torch.matmul(wg, cols).reshape(cols.shape[0], w.shape[0], hh, ww))
    out = torch.cat(parts) if len(parts) > 1 else parts[0]
    return out[:, :, 0] if one else out


@dataclass(eq=False)
class Resize(Monotone):
    """Nearest or (bi)linear resizing of (C, H, W) maps (``nn.Upsample``, ``interpolate``): separable,
    ``y = R x S^T`` per channel. ``rows`` (H_out, H_in) and ``cols`` (W_out, W_in), float64, read off
    ``fn`` by ``resize``, let windows (window_resize.py) pass through it; None where ``fn`` is not such a
    map (then rows through it turn dense)."""

    rows: Tensor | None = None
    cols: Tensor | None = None


def resize(op: Generic, example: Tensor) -> Generic:
    """``op`` (a per-sample resizing function) as a ``Resize`` with its two matrices when
    ``fn`` is separable, nonnegative and monotone in position (checked on a random map)."""
    if example.dim() != 4:
        return op
    out = Resize(op.fn, op.nonneg, op.terms)
    out.tracked = op.tracked
    c, h, w = example.shape[1:]
    with torch.no_grad():
        rows, cols = _axis(op.fn, c, h, w, 2), _axis(op.fn, c, h, w, 3)
        x = torch.rand(2, c, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        y = op.fn(x)
    if rows is None or cols is None or y.shape[2:] != (rows.shape[0], cols.shape[0]):
        return op
    if not torch.allclose(rows @ x @ cols.T, y, rtol=1e-12, atol=1e-12):
        return op
    out.rows, out.cols = rows, cols
    return out


def _axis(fn, c: int, h: int, w: int, dim: int) -> Tensor | None:
    """The matrix of ``fn`` along axis ``dim`` (2: rows, 3: columns): input slice ``i`` set to one,
    read at the first entry of the other axis (there one source with weight one when
    upsampling; otherwise a weight sum of one, which the caller's check confirms)."""
    n = (h, w)[dim - 2]
    probe = torch.zeros(n, c, h, w, dtype=torch.float64)
    idx = torch.arange(n)
    if dim == 2:
        probe[idx, :, idx, :] = 1
        m = fn(probe)[:, 0, :, 0]  # (n_in, n_out)
    else:
        probe[idx, :, :, idx] = 1
        m = fn(probe)[:, 0, 0, :]
    m = m.T.contiguous()  # (n_out, n_in)
    nz = m != 0
    if bool((m < 0).any()) or not bool(nz.any(1).all()):
        return None
    pos = torch.arange(n).expand_as(m)
    first = torch.where(nz, pos, n).amin(1)
    last = torch.where(nz, pos, -1).amax(1)
    if bool((first.diff() < 0).any()) or bool((last.diff() < 0).any()):
        return None  # not monotone in position: windows would not stay windows
    return m


@dataclass(eq=False)
class MatMulConst(LinearOp):
    """``x @ W`` (``left=False``) or ``W @ x`` with a constant W, broadcasting as torch.matmul."""

    weight: Tensor
    left: bool = False

    def forward(self, x):
        w = _cast(self.weight, x)
        return w @ x if self.left else x @ w

    def forward_abs(self, r):
        w = _cast(self.weight, r).abs()
        return w @ r if self.left else r @ w

    def backward(self, A, in_shapes):
        w = _cast(self.weight, A).transpose(-1, -2)
        a_in = w @ A if self.left else A @ w
        return [_unbroadcast(a_in, in_shapes[0])], A.new_zeros(A.shape[:2])

    def rounding_terms(self, out_shape) -> int:
        contracted = self.weight.shape[-2] if self.left else self.weight.shape[-1]
        shared = math.prod(self.weight.shape[:-2])  # coefficients summed over W's batch dims
        return contracted * shared + 1


@dataclass(eq=False)
class CatConst(LinearOp):
    """Concatenation along per-sample dimension ``dim`` of input-dependent parts (``None`` in
    ``parts``) and constants (one sample's values, repeated over the batch)."""

    dim: int
    parts: tuple[Tensor | None, ...]
    sizes: tuple[int, ...]
    n_inputs: int = 1

    def _cat(self, xs, zero: bool):
        it = iter(xs)
        like = xs[0]
        out = []
        for p in self.parts:
            if p is None:
                out.append(next(it))
            else:
                c = _cast(p, like)
                c = torch.zeros_like(c) if zero else c
                out.append(c.expand(like.shape[0], *c.shape))
        return torch.cat(out, self.dim + 1)

    def forward(self, *xs):
        return self._cat(xs, False)

    def forward_abs(self, *rs):
        return self._cat(rs, True)

    def backward(self, A, in_shapes):
        pieces = torch.split(A, list(self.sizes), dim=self.dim + 2)
        ins, bias = [], A.new_zeros(A.shape[:2])
        for p, a in zip(self.parts, pieces, strict=True):
            if p is None:
                ins.append(a)
            else:
                bias = bias + (a * _cast(p, A)).flatten(2).sum(-1)
        return ins, bias

    def rounding_terms(self, out_shape) -> int:
        return 0  # coefficients split; the constants' part is in the tracker's references


@dataclass(eq=False)
class Where(LinearOp):
    """``torch.where(mask, x, y)`` with a constant mask and two input-dependent operands of the
    output's shape (exact: coefficients are selected, not summed)."""

    mask: Tensor
    n_inputs: int = 2

    def forward(self, x, y):
        return torch.where(self.mask, x, y)

    forward_abs = forward

    def backward(self, A, in_shapes):
        m = self.mask.to(A.dtype)
        return [_unbroadcast(A * m, in_shapes[0]), _unbroadcast(A * (1 - m), in_shapes[1])], (
            A.new_zeros(A.shape[:2])
        )

    def rounding_terms(self, out_shape) -> int:
        return 0


@dataclass(eq=False)
class Center(LinearOp):
    """``x - mean(x)`` over per-sample dimensions ``dims`` (LayerNorm's first step); the centring
    matrix is symmetric, so its transpose is itself."""

    dims: tuple[int, ...]

    def _n(self, x) -> int:
        return math.prod(x.shape[d + 1] for d in self.dims)

    def forward(self, x):
        d = tuple(i + 1 for i in self.dims)
        return x - x.mean(d, keepdim=True)

    def forward_abs(self, r):
        d = tuple(i + 1 for i in self.dims)
        n = self._n(r)
        return r * (1 - 2 / n) + r.sum(d, keepdim=True) / n if n > 1 else torch.zeros_like(r)

    def backward(self, A, in_shapes):
        d = tuple(i + 2 for i in self.dims)
        return [A - A.mean(d, keepdim=True)], A.new_zeros(A.shape[:2])

    def rounding_terms(self, out_shape) -> int:
        return math.prod(out_shape[d] for d in self.dims) + 2


@dataclass(eq=False)
class PairDiff(LinearOp):
    """``d[..., i, j] = x_j - x_i`` for every j != i along per-sample dimension ``dim``, moved
    last: shape (*others, n, n - 1). The softmax as ``1 / (1 + sum_j exp(x_j - x_i))``."""

    dim: int
    n: int

    def _index(self, device) -> Tensor:
        j = torch.arange(self.n - 1, device=device)
        i = torch.arange(self.n, device=device)[:, None]
        return j + (j >= i).long()  # (n, n - 1): every j except i

    def _pairs(self, x, sign: float):
        x = x.movedim(self.dim + 1, -1)
        return x[..., self._index(x.device)] + sign * x[..., :, None]

    def forward(self, x):
        return self._pairs(x, -1.0)

    def ibp(self, b):
        lo, hi = b.lower.movedim(self.dim + 1, -1), b.upper.movedim(self.dim + 1, -1)
        idx = self._index(lo.device)
        return Bounds(lo[..., idx] - hi[..., :, None], hi[..., idx] - lo[..., :, None])

    def forward_abs(self, r):
        return self._pairs(r, 1.0)

    def backward(self, A, in_shapes):
        return [vjp_backward(self.forward, A, in_shapes[0])], A.new_zeros(A.shape[:2])

    def rounding_terms(self, out_shape) -> int:
        return 2 * self.n
