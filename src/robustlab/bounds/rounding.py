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
    b, m = a.shape[:2]
    n = math.prod(a.shape[2:])
    if v.dim() == a.dim():
        v = v[:, 0]
    v = v.reshape(-1, n, 1).to(a.dtype).expand(b, -1, -1)
    return torch.bmm(a.abs().reshape(b, m, n), v)[..., 0].double() * (1 + gamma(n))


def linear_error(op: LinearOp, a, mags: list[Tensor], out_shape: tuple[int, ...]) -> Tensor:
    """Bound on ``sum |error| * max|x|`` for the coefficients ``op.backward(a)`` computes in
    float32 (its bias term is recomputed in float64 by ``linear_bias``)."""
    numel = math.prod(out_shape)
    if isinstance(op, Reshape):
        return _zero(a)
    if isinstance(op, Add):  # exact, unless an input was broadcast (its coefficients are summed)
        err = _zero(a)
        for m in mags:
            if tuple(m.shape[1:]) != tuple(out_shape):
                err = err + gamma(numel) * absdot(a, m.expand(m.shape[0], *out_shape))
        return err
    m = mags[0]
    if isinstance(op, Linear):
        n = op.weight.shape[0]  # rows @ W sums over the layer's outputs
    elif isinstance(op, Conv):
        n = op.weight.shape[0] // op.groups * math.prod(op.weight.shape[2:])
    elif isinstance(op, Affine):
        n = 1
    elif isinstance(op, Generic) and op.nonneg:  # pooling by average, padding, slicing
        n = numel if op.terms is None else op.terms
        if not n:
            return _zero(a)
    else:
        raise TypeError(f"no float32 rounding bound for {type(op).__name__}")
    return gamma(n) * absdot(a, op.forward_abs(m))


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


def activation_bias(a, lb: Tensor, ub: Tensor, zero_lower_intercept: bool) -> Tensor:
    """The intercept terms ``a- ub + a+ lb`` of a relaxation step, in float64."""
    if isinstance(a, Window):
        data = a.data.double()
        ub_, lb_ = a.gather(ub).double(), None if zero_lower_intercept else a.gather(lb).double()
    else:
        data, ub_, lb_ = a.double(), ub.double(), None if zero_lower_intercept else lb.double()
    neg = data.clamp(max=0)
    out = (neg * ub_).flatten(2).sum(-1)
    if lb_ is not None:
        out = out + ((data - neg) * lb_).flatten(2).sum(-1)
    return out


def activation_error(a, la: Tensor, ua: Tensor, m: Tensor) -> Tensor:
    """The relaxation step ``a+ la + a- ua`` in float32: a few roundings per entry (relaxations
    of shape (batch, 1 or rows, *s))."""
    return _absdot_rows(a, 4 * U * (2 * la.abs() + ua.abs()) * m[:, None])


def _absdot_rows(a, v: Tensor) -> Tensor:
    if v.shape[1] == 1 or isinstance(a, Window):
        return absdot(a, v)
    n = math.prod(v.shape[2:])
    return (a.abs() * v).flatten(2).sum(-1).double() * (1 + gamma(n))


def pool_error(op, a: Tensor, m: Tensor) -> Tensor:
    """Max pooling's transpose (a scatter-add over overlapping windows) and its bias term."""
    n = math.prod(a.shape[2:]) + math.prod(op.kernel) + 2
    return 2 * gamma(n) * absdot(a, op.forward(m))


def sum_error(total, m: Tensor) -> Tensor:
    """Adding two coefficient sets (branches meeting, split terms): one rounding per entry."""
    return gamma(1) * absdot(total, m)


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
