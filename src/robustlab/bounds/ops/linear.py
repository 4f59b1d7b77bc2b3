"""Affine operations: Linear, Conv, elementwise affine (normalisation, BatchNorm), Add/Sub of two
branches, and shape-only operations (reshape, pad, pooling by average, slicing)."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustlab.bounds.ops.base import Bounds, LinearOp, vjp_backward
from robustlab.bounds.ops.transposed import conv_transpose

_CASTS: dict[tuple[int, bool], tuple] = {}


def _cast(t: Tensor | None, like: Tensor, absolute: bool = False) -> Tensor | None:
    """``t`` (``|t|`` when ``absolute``) in ``like``'s dtype and device; conversions of
    constants are cached (keyed by the tensor's identity and version, dropped when the tensor
    is freed)."""
    if t is None or (not absolute and t.dtype == like.dtype and t.device == like.device):
        return t
    if torch.is_grad_enabled() and t.requires_grad:
        t = t.to(dtype=like.dtype, device=like.device)
        return t.abs() if absolute else t
    key = (t._version, like.dtype, like.device)
    hit = _CASTS.get((id(t), absolute))
    if hit is None or hit[0] != key or hit[1]() is not t:
        value = t.detach().to(dtype=like.dtype, device=like.device)
        hit = (
            key,
            weakref.ref(t, lambda _, k=(id(t), absolute): _CASTS.pop(k, None)),
            value.abs() if absolute else value,
        )
        _CASTS[(id(t), absolute)] = hit
    return hit[2]


@dataclass(eq=False)
class Linear(LinearOp):
    """``y = x W^T + b`` on the last dimension."""

    weight: Tensor
    bias: Tensor | None

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.linear(x, _cast(self.weight, x), _cast(self.bias, x))

    def forward_abs(self, r: Tensor) -> Tensor:
        return nn.functional.linear(r, _cast(self.weight, r, absolute=True))

    def backward(self, A, in_shapes):
        w = _cast(self.weight, A)
        a_in = A @ w
        if self.bias is None:
            return [a_in], A.new_zeros(A.shape[:2])
        bias = A @ _cast(self.bias, A)
        if bias.dim() > 2:
            bias = bias.flatten(2).sum(-1)

        return [a_in], bias


@dataclass(eq=False)
class Conv(LinearOp):
    """1-D or 2-D convolution (zero padding, any stride, dilation, groups)."""

    weight: Tensor
    bias: Tensor | None
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int

    def _conv(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        f = nn.functional.conv2d if w.dim() == 4 else nn.functional.conv1d
        return f(x, w, b, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x):
        return self._conv(x, _cast(self.weight, x), _cast(self.bias, x))

    def forward_abs(self, r):
        return self._conv(r, _cast(self.weight, r).abs(), None)

    def _patches(self, w: Tensor, extra: tuple[int, ...]) -> bool:
        """Non-overlapping patches (a vision transformer's embedding): stride = kernel."""
        return (
            w.dim() == 4
            and tuple(self.stride) == tuple(w.shape[2:])
            and not any(self.padding)
            and all(d == 1 for d in self.dilation)
            and self.groups == 1
            and not any(extra)
        )

    def backward(self, A, in_shapes):
        b, m = A.shape[:2]
        out_shape = A.shape[2:]
        w = _cast(self.weight, A)
        flat = A.reshape(b * m, *out_shape)
        in_shape = in_shapes[0]
        spatial = len(in_shape) - 1
        # output_padding recovers input sizes that the stride dropped
        expected = [
            (out_shape[1 + i] - 1) * self.stride[i]
            - 2 * self.padding[i]
            + self.dilation[i] * (w.shape[2 + i] - 1)
            + 1
            for i in range(spatial)
        ]
        extra = tuple(in_shape[1 + i] - expected[i] for i in range(spatial))
        if self._patches(w, extra):
            a_in = _unpatch(flat, w).reshape(b, m, *in_shape)
        else:
            args = (self.stride, self.padding, extra, self.groups, self.dilation)
            a_in = conv_transpose(flat, w, *args).reshape(b, m, *in_shape)
        if self.bias is None:
            return [a_in], A.new_zeros(b, m)
        shape = (1, 1, -1) + (1,) * spatial
        bias = (A * _cast(self.bias, A).view(shape)).flatten(2).sum(-1)
        return [a_in], bias


def _unpatch(A: Tensor, w: Tensor) -> Tensor:
    """The transposed convolution of ``A`` (n, C_out, H, W) with ``w`` (C_out, C_in, kh, kw) at
    stride (kh, kw): each output position spreads over its own patch, so one matrix product
    (float64 BLAS, 2-3x faster than conv_transpose2d's float64 path for 16x16 patches)."""
    n, c_out, h, wd = A.shape
    _, c_in, kh, kw = w.shape
    rows = A.permute(0, 2, 3, 1).reshape(-1, c_out) @ w.reshape(c_out, -1)
    out = rows.reshape(n, h, wd, c_in, kh, kw).permute(0, 3, 1, 4, 2, 5)
    return out.reshape(n, c_in, h * kh, wd * kw)


_CONSTS: dict[float, Tensor] = {}


def _const(v: Tensor | float) -> Tensor:
    """A constant as a tensor; Python numbers in float64 (the model's literal, not its float32
    rounding)."""
    if isinstance(v, Tensor):
        return v
    if v not in _CONSTS:
        _CONSTS[v] = torch.tensor(v, dtype=torch.float64)
    return _CONSTS[v]


@dataclass(eq=False)
class Affine(LinearOp):
    """Elementwise ``y = x * scale + shift`` with constants broadcast against one sample
    (normalisation, BatchNorm in eval mode, multiplication or addition of a constant)."""

    scale: Tensor | float
    shift: Tensor | float

    def _s(self, like):
        return _cast(_const(self.scale), like)

    def _t(self, like):
        return _cast(_const(self.shift), like)

    def forward(self, x):
        return x * self._s(x) + self._t(x)

    def forward_abs(self, r):
        return r * self._s(r).abs()

    def backward(self, A, in_shapes):
        s, t = self._s(A), self._t(A)
        a_in = A * s
        if a_in.shape != A.shape:  # a constant that broadcasts to more than one sample's shape
            a_in = a_in.expand(A.shape)
        bias = (A * t).flatten(2).sum(-1) if t.abs().max() > 0 else A.new_zeros(A.shape[:2])
        return [a_in], bias


@dataclass(eq=False)
class Add(LinearOp):
    """Sum or difference of two input-dependent tensors (residual connections)."""

    sign: float = 1.0
    n_inputs: int = 2

    def forward(self, x, y):
        return x + self.sign * y

    def forward_abs(self, rx, ry):
        return rx + ry

    def ibp(self, bx, by):
        if self.sign > 0:
            return Bounds(bx.lower + by.lower, bx.upper + by.upper)
        return Bounds(bx.lower - by.upper, bx.upper - by.lower)

    def backward(self, A, in_shapes):
        return [
            _unbroadcast(A, in_shapes[0]),
            _unbroadcast(self.sign * A, in_shapes[1]),
        ], A.new_zeros(A.shape[:2])


@dataclass(eq=False)
class Cat(LinearOp):
    """Concatenation of input-dependent tensors along a per-sample dimension ``dim`` (0 is the
    first dimension after the batch); exact both ways (coefficients are split, not summed)."""

    dim: int
    sizes: tuple[int, ...]
    n_inputs: int = 2

    def forward(self, *xs):
        return torch.cat(xs, self.dim + 1)

    forward_abs = forward

    def ibp(self, *bs):
        return Bounds(self.forward(*[b.lower for b in bs]), self.forward(*[b.upper for b in bs]))

    def backward(self, A, in_shapes):
        return list(torch.split(A, list(self.sizes), dim=self.dim + 2)), A.new_zeros(A.shape[:2])


def _unbroadcast(A: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Sum coefficients over dimensions an input was broadcast along."""
    extra = A.dim() - 2 - len(shape)
    if extra:
        A = A.sum(dim=tuple(range(2, 2 + extra)))
    dims = tuple(2 + i for i, d in enumerate(shape) if d == 1 and A.shape[2 + i] != 1)
    return A.sum(dim=dims, keepdim=True) if dims else A


@dataclass(eq=False)
class Reshape(LinearOp):
    """Reshape one sample to ``shape`` (flatten, view, reshape)."""

    shape: tuple[int, ...]

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)

    forward_abs = forward

    def ibp(self, b):
        return Bounds(self.forward(b.lower), self.forward(b.upper))

    def backward(self, A, in_shapes):
        return [A.reshape(*A.shape[:2], *in_shapes[0])], A.new_zeros(A.shape[:2])


@dataclass(eq=False)
class Generic(LinearOp):
    """A linear map without bias given as a function (pad, average pooling, slicing, permuting);
    its transpose is taken by autograd."""

    fn: Callable[[Tensor], Tensor]
    nonneg: bool = True  # all coefficients are >= 0, so |L| r = L r
    terms: int | None = None  # most terms summed per entry, both ways (None: unknown)

    def forward(self, x):
        return self.fn(x)

    def forward_abs(self, r):
        if not self.nonneg:
            raise NotImplementedError
        return self.fn(r)

    def backward(self, A, in_shapes):
        return [vjp_backward(self.fn, A, in_shapes[0])], A.new_zeros(A.shape[:2])
