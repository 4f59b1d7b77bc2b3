"""Rigorous float32 rounding for the bound engines.

Backward passes in float32 (the expensive part: products of coefficient rows with weights) carry
a bound on their own rounding error. By the standard bounds on floating-point error (Higham 2002,
"Accuracy and Stability of Numerical Algorithms", ch. 3), a dot product of n terms, in any
summation order and with or without fused multiply-add, is off by at most ``gamma_n |a|.|b|``
with ``gamma_n = n u / (1 - n u)``, ``u = 2^-24``. A pass whose coefficients are then not exactly
the transpose of a layer stays sound when the bound is lowered by ``sum |error| * max|x|`` over
that layer's input x: ``gamma_n <|a|, |W| m>`` with ``m`` the magnitude of x's interval bounds,
one product with a vector per layer. Those error terms, the bias, the concretisation over the
input region, the relaxations' intercepts and all interval bounds are computed in float64 and
rounded outward to float32. Direct and GEMM convolutions are covered; Winograd or FFT algorithms
are not (CPU PyTorch uses neither for float32 transposed convolutions).

float64 passes skip this accounting: their rounding, ~1e-16 relative per operation, is documented
in the README as far below any margin a verdict depends on.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from robustlab.bounds.ops.activation import ReLU
from robustlab.bounds.ops.base import Bounds, InputRegion, LinearOp
from robustlab.bounds.ops.linear import Add, Affine, Conv, Generic, Linear, Reshape, _cast
from robustlab.bounds.window import Window

U = 2.0**-24  # unit roundoff of float32
SLACK = 1 + 1e-3  # for the error terms' own rounding (sums of positive terms, done in float32)


_STATE = threading.local()


@contextmanager
def ignored() -> Iterator[None]:
    """Skip the float32 accounting inside the block (training: bounds there prove nothing)."""
    before = getattr(_STATE, "off", False)
    _STATE.off = True
    try:
        yield
    finally:
        _STATE.off = before


def tracked(t: Tensor | Window) -> bool:
    """Whether rounding is accounted for in this tensor's precision (float32)."""
    t = t.data if isinstance(t, Window) else t
    return t.dtype == torch.float32 and not getattr(_STATE, "off", False)


def gamma(n: int) -> float:
    n = max(int(n), 1)
    if n * U >= 0.25:
        raise ValueError(f"float32 sums of {n} terms are too long for a rounding bound")
    return SLACK * n * U / (1.0 - n * U)


def magnitude(b: Bounds) -> Tensor:
    """``max |x|`` over the interval, elementwise."""
    return torch.maximum(b.lower.abs(), b.upper.abs())


def absdot(a: Tensor | Window, v: Tensor) -> Tensor:
    """``<|a|, v>`` per row, float64: ``a`` (batch, rows, *s), ``v`` (batch or 1, [1,] *s) >= 0."""
    if isinstance(a, Window):
        if v.dim() == a.data.dim():
            v = v[:, 0]
        elif v.dim() == a.data.dim() - 2:  # no batch dimension
            v = v[None]
        return (a.data.abs() * a.gather(v.to(a.data.dtype))).flatten(2).sum(-1).double() * SLACK
    if v.dim() == a.dim():
        v = v[:, 0]
    n = math.prod(a.shape[2:])
    return _dense_dot(a, v, absolute=True) * (1 + gamma(n + 2))


CHUNK = 2**18  # coefficient entries converted at a time (no full-size temporaries)


def _dense_dot(a: Tensor, v: Tensor, absolute: bool = False) -> Tensor:
    """Per row of ``a`` (batch, rows, *s): ``<a, v>`` in float64, or ``<|a|, v>`` in a's own
    precision (v >= 0); ``v`` has shape (batch or 1, *s). A chunk of ``a`` at a time."""
    b, m = a.shape[:2]
    n = math.prod(a.shape[2:])
    a3 = a.reshape(b, m, n)
    dt = a.dtype if absolute else torch.float64
    v3 = v.reshape(-1, n).to(dt)

    def conv(x: Tensor) -> Tensor:
        return x.abs() if absolute else x.double()

    if b > 1 and a3.stride(0) == 0:  # the same rows for every example
        return (conv(a3[0]) @ v3.T).T.expand(b, m).double()
    out = torch.empty(b, m, dtype=dt, device=a.device)
    per = CHUNK // max(m * n, 1)
    if per >= 1:  # whole examples per chunk
        for s in range(0, b, per):
            e = min(b, s + per)
            vs = v3[s:e] if v3.shape[0] > 1 else v3.expand(e - s, n)
            out[s:e] = torch.bmm(conv(a3[s:e]), vs[:, :, None])[..., 0]
        return out.double()
    rows = max(1, CHUNK // n)
    for s in range(b):
        vs = v3[s if v3.shape[0] > 1 else 0]
        for r in range(0, m, rows):
            out[s, r : r + rows] = conv(a3[s, r : r + rows]) @ vs
    return out.double()


def _terms(op: LinearOp, out_shape: tuple[int, ...]) -> int:
    """Most products summed per coefficient by ``op.backward`` (0: exact)."""
    if isinstance(op, Linear):
        return op.weight.shape[0]  # rows @ W sums over the layer's outputs
    if isinstance(op, Conv):
        return op.weight.shape[0] // op.groups * math.prod(op.weight.shape[2:])
    if isinstance(op, Affine):
        return 2  # the product, and the scale's own rounding to float32
    if isinstance(op, Generic) and op.nonneg:  # pooling by average, padding, slicing
        return math.prod(out_shape) if op.terms is None else op.terms
    raise TypeError(f"no float32 rounding bound for {type(op).__name__}")


def dot64(a, v: Tensor) -> Tensor:
    """``<a, v>`` per row in float64: ``a`` (batch, rows, *s) or a Window, ``v`` (batch or 1, *s)."""
    if isinstance(a, Window):
        if v.dim() == a.data.dim() - 2:
            v = v[None]
        return (a.data.double() * a.gather(v.double())).flatten(2).sum(-1)
    return _dense_dot(a, v)


class Tracker:
    """The float64 side of a float32 backward pass (CROWN): its bias, and a bound on how far
    rounding moved its coefficients from the exact transposes and relaxations.

    A step that should give coefficients ``T`` on a node x gives ``T + E``; the bound stays
    sound when lowered by ``E . x`` for the worst x. With ``c`` the centre of x's interval bounds
    and ``w`` their half-width, ``E . x >= E . c - |E| . w``: ``E . c`` is computed (in float64:
    ``(T + E) . c - T . c``), and ``|E|`` is bounded by the standard float32 error bounds. The
    error term thus scales with the intervals' widths, not with the values' magnitude.
    """

    def __init__(self, bounds, rows: torch.Size, device) -> None:
        self.bounds = bounds
        self.bias = torch.zeros(rows, dtype=torch.float64, device=device)
        self.err = torch.zeros(rows, dtype=torch.float64, device=device)
        self._ref: dict[int, tuple[Tensor, Tensor]] = {}

    def ref(self, j: int) -> tuple[Tensor, Tensor]:
        """Centre and half-width of node j's interval bounds, float64."""
        if j not in self._ref:
            lo, hi = self.bounds[j].lower.double(), self.bounds[j].upper.double()
            self._ref[j] = ((lo + hi) / 2, (hi - lo) / 2)
        return self._ref[j]

    def linear(self, op: LinearOp, a, ins: list, inputs: tuple[int, ...], shape) -> None:
        """An affine step ``y = L x + b``: ``ins`` are the computed coefficients on ``inputs``.
        Its bias ``a . b`` and ``-E . c`` together are ``a . (L c + b) - ins . c``."""
        if isinstance(op, (Reshape, Add)):  # exact, unless Add broadcast an input (summed)
            for j in inputs if isinstance(op, Add) else ():
                m = magnitude(self.bounds[j])
                if tuple(m.shape[1:]) != tuple(shape):
                    self.err = self.err + gamma(math.prod(shape)) * absdot(a, _bcast(m, shape))
            return
        j = inputs[0]
        c, w = self.ref(j)
        self.bias = self.bias + dot64(a, op.forward(c)) - dot64(ins[0], c)
        n = _terms(op, shape)
        if n:
            self.err = self.err + gamma(n) * absdot(a, op.forward_abs(w))

    def activation(self, a, la, lb, ua, ub, zero_lower_intercept: bool, a_in, j: int) -> None:
        """The relaxation step ``a_in = a+ la + a- ua`` (a few roundings per entry). Its
        intercepts ``a+ lb + a- ub`` and ``-E . c`` together are
        ``a . (lb + la c) + a- . (ub - lb + (ua - la) c) - a_in . c``."""
        c, w = self.ref(j)
        la_, ua_, lb_, ub_ = la.double(), ua.double(), lb.double(), ub.double()
        c_ = c[:, None]
        v1 = lb_ + la_ * c_
        v2 = ub_ - lb_ + (ua_ - la_) * c_
        steps = 4 * U * (2 * la.abs() + ua.abs()) * w[:, None].to(la.dtype)
        if isinstance(a, Window):
            neg = Window(a.data.clamp(max=0), a.oy, a.ox, a.frame)
            self.bias = self.bias + dot64(a, v1[:, 0]) + dot64(neg, v2[:, 0])
        elif v1.shape[1] == 1:
            self.bias = self.bias + dot64(a, v1[:, 0]) + dot64(a.clamp(max=0), v2[:, 0])
        else:  # per-row slopes (alpha-CROWN), dense rows
            a64 = a.double()
            n64 = a64.clamp(max=0)
            self.bias = self.bias + (a64 * v1 + n64 * v2).flatten(2).sum(-1)
        self.bias = self.bias - dot64(a_in, c)
        self.err = self.err + _absdot_rows(a, steps) * SLACK

    def pool(self, op, a: Tensor, j: int) -> None:
        """Max pooling: its bias in float64; its transpose sums overlapping windows."""
        l, u = self.bounds[j].lower, self.bounds[j].upper
        _, exact, u_max = op.relax_indices(l, u)
        a64 = a.double().reshape(*a.shape[:3], -1)
        gap = (1 - exact[:, None].double()) * u_max[:, None].double()
        self.bias = self.bias + (a64.clamp(max=0) * gap).flatten(2).sum(-1)
        if any(k > s for k, s in zip(op.kernel, op.stride, strict=True)):
            m = op.forward(magnitude(self.bounds[j]))
            self.err = self.err + gamma(math.prod(op.kernel)) * absdot(a, m)

    def added(self, parts: list, total, j: int) -> None:
        """``total`` was computed as the sum of ``parts`` (one rounding per entry)."""
        c, w = self.ref(j)
        self.bias = self.bias - (dot64(total, c) - sum(dot64(p, c) for p in parts))
        self.err = self.err + gamma(1) * absdot(total, w)

    def finish(self, A0, dtype: torch.dtype, linear: dict | None) -> Tensor:
        """The lower bound: concretisation over the input region in float64, rounded down."""
        bias = self.bias - self.err
        if linear is not None:
            linear["A"], linear["bias"] = (A0.dense() if isinstance(A0, Window) else A0), bias
        region = upcast(self.bounds[0])
        if isinstance(A0, Window):
            from robustlab.bounds import window

            a64 = Window(A0.data.double(), A0.oy, A0.ox, A0.frame)
            value = window.concretize(a64, region)
        else:
            from robustlab.bounds.crown import concretize

            value = concretize(A0.double(), region)
        return round_down(value + bias, dtype)


def _bcast(m: Tensor, shape) -> Tensor:
    return m.expand(m.shape[0], *shape)


def linear_bias(op: LinearOp, a) -> Tensor:
    """``a . b`` for the constant term b of an affine operation, in float64."""
    win = isinstance(a, Window)
    data = (a.data if win else a).double()
    if isinstance(op, (Linear, Conv)) and op.bias is not None:
        bias = _cast(op.bias, data)
        if isinstance(op, Linear):
            return (data @ bias).flatten(2).sum(-1) if data.dim() > 3 else data @ bias
        return data.flatten(3).sum(-1) @ bias
    if isinstance(op, Affine):
        t = op._t(data)
        if not bool(t.abs().max() > 0):
            return _zero(a)
        if win and t.dim() >= 2 and t.shape[-2:] != (1, 1):
            t = a.gather(t.expand(1, *t.shape[-3:])).double()
        return (data * t).flatten(2).sum(-1)
    return _zero(a)


def _absdot_rows(a, v: Tensor) -> Tensor:
    if v.shape[1] == 1 or isinstance(a, Window):
        return absdot(a, v)
    n = math.prod(v.shape[2:])
    return (a.abs() * v).flatten(2).sum(-1).double() * (1 + gamma(n + 2))


def _zero(a) -> Tensor:
    data = a.data if isinstance(a, Window) else a
    return torch.zeros(data.shape[:2], dtype=torch.float64, device=data.device)


def round_down(x: Tensor, dtype: torch.dtype) -> Tensor:
    """``x`` in ``dtype``, never above ``x`` (gradients pass as through a plain cast)."""
    y = x.to(dtype)
    if torch.finfo(dtype).eps <= torch.finfo(x.dtype).eps:
        return y
    with torch.no_grad():
        d = x.detach()
        yd = y.detach()
        fix = torch.where(
            yd.to(d.dtype) > d, torch.nextafter(yd, torch.full_like(yd, -torch.inf)), yd
        )
    return y + (fix - yd)


def outward(b: Bounds, dtype: torch.dtype) -> Bounds:
    return Bounds(round_down(b.lower, dtype), -round_down(-b.upper, dtype))


def upcast(b: Bounds) -> Bounds:
    if isinstance(b, InputRegion):
        center = None if b.center is None else b.center.double()
        return InputRegion(b.lower.double(), b.upper.double(), center, b.l2_eps)
    return Bounds(b.lower.double(), b.upper.double())


def safe_ibp(op, *bs: Bounds) -> Bounds:
    """``op.ibp``; for float32 bounds computed in float64 and rounded outward."""
    if not tracked(bs[0].lower):
        return op.ibp(*bs)
    return outward(op.ibp(*[upcast(b) for b in bs]), torch.float32)


def relax(op, l: Tensor, u: Tensor, alpha: Tensor | None = None):
    """``op.relax`` whose lines stay valid with float32 slopes and intercepts: computed in
    float64, slopes rounded, intercepts moved outward by what the slopes' rounding can cost."""
    if not tracked(l):
        return op.relax(l, u, alpha)
    l64, u64 = l.double(), u.double()
    la, lb, ua, ub = op.relax(l64, u64, None if alpha is None else alpha.double())
    la32, ua32 = la.float(), ua.float()
    m = torch.maximum(l64.abs(), u64.abs())
    if isinstance(op, ReLU):  # the lower line la x (la in [slope, 1]) is exact; refit the upper
        s, ua_ = op.slope, ua32.double()
        ub = torch.maximum(s * l64 - ua_ * l64, u64 - ua_ * u64).clamp_min(0.0)
        ub = ub + 1e-15 * (ua_.abs() + 1) * m  # the float64 products and differences above
    else:
        lb = lb - (la - la32.double()).abs() * m
        ub = ub + (ua - ua32.double()).abs() * m
    return la32, round_down(lb, torch.float32), ua32, -round_down(-ub, torch.float32)
