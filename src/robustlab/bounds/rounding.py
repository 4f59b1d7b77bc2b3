"""Rigorous float32 rounding for the bound engines.

Backward passes in float32 (the expensive part: products of coefficient rows with weights) carry
a bound on their own rounding error, so float32 bounds are as sound as float64 ones. By the
standard bounds on floating-point error (Higham 2002, "Accuracy and Stability of Numerical
Algorithms", ch. 3), a dot product of n terms, in any summation order and with or without fused
multiply-add, is off by at most ``gamma_n |a|.|b|`` with ``gamma_n = n u / (1 - n u)``,
``u = 2^-24``. ``tracker.Tracker`` turns that into a bound on the whole pass through a reference
trajectory (see its docstring), so the cost is a few products of the float32 coefficients with
vectors per layer and the bounds lose only ~gamma_n times the intervals' widths, not their
magnitudes. Relaxations, interval bounds and every reference value are computed in float64 and
rounded outward. Direct and GEMM convolutions are covered; Winograd or FFT algorithms are not
(CPU PyTorch uses neither for float32 transposed convolutions).

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
from robustlab.bounds.ops.base import Bounds, InputRegion

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


def accounted() -> bool:
    """Whether float32 passes bound their rounding here (not inside ``ignored()``)."""
    return not getattr(_STATE, "off", False)


def tracked(t: Tensor) -> bool:
    """Whether rounding is accounted for in this tensor's precision (float32)."""
    return t.dtype == torch.float32 and not getattr(_STATE, "off", False)


def gamma(n: int) -> float:
    n = max(int(n), 1)
    if n * U >= 0.25:
        raise ValueError(f"float32 sums of {n} terms are too long for a rounding bound")
    return SLACK * n * U / (1.0 - n * U)


def absdot(a: Tensor, v: Tensor) -> Tensor:
    """``<|a|, v>`` per row, float64: ``a`` (batch, rows, *s), ``v`` (batch or 1, [1,] *s) >= 0
    (the dense rows' sums; ``coef.Coef.absdot`` for any form)."""
    if v.dim() == a.dim():
        v = v[:, 0]
    n = math.prod(a.shape[2:])
    return dense_dot(a, v, absolute=True) * (1 + gamma(n + 2))


CHUNK = 2**18  # coefficient entries converted at a time (no full-size temporaries)


def dense_dot(a: Tensor, v: Tensor, absolute: bool = False) -> Tensor:
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
            # (1, n) @ (n, rows) per example: measured 1.7-3.5x faster than (rows, n) @ (n, 1)
            out[s:e] = torch.bmm(vs[:, None, :], conv(a3[s:e]).transpose(1, 2))[:, 0]
        return out.double()
    rows = max(1, CHUNK // n)
    for s in range(b):
        vs = v3[s if v3.shape[0] > 1 else 0]
        for r in range(0, m, rows):
            out[s, r : r + rows] = conv(a3[s, r : r + rows]) @ vs
    return out.double()


def round_down(x: Tensor, dtype: torch.dtype) -> Tensor:
    """``x`` in ``dtype``, never above ``x`` (gradients pass as through a plain cast)."""
    y = x.to(dtype)
    if torch.finfo(dtype).eps <= torch.finfo(x.dtype).eps:
        return y
    if not x.requires_grad:  # the common case, in three operations
        down = torch.nextafter(y, y.new_tensor(-torch.inf))
        return torch.where(y.to(x.dtype) > x, down, y)
    with torch.no_grad():
        d = x.detach()
        yd = y.detach()
        fix = torch.where(
            yd.to(d.dtype) > d, torch.nextafter(yd, torch.full_like(yd, -torch.inf)), yd
        )
    return y + (fix - yd) if x.requires_grad else fix


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
    if isinstance(op, ReLU):
        # the lower line la x is valid for every la in [slope, 1]: round la up, into that range
        # (rounded to nearest, a slope such as 0.01 could fall below the model's); refit the upper
        la32 = -round_down(-la, torch.float32)
        s, ua_ = op.slope, ua32.double()
        ub = torch.maximum(s * l64 - ua_ * l64, u64 - ua_ * u64).clamp_min(0.0)
        ub = ub + 1e-15 * (ua_.abs() + 1) * m  # the float64 products and differences above
    else:
        lb = lb - (la - la32.double()).abs() * m
        ub = ub + (ua - ua32.double()).abs() * m
    return la32, round_down(lb, torch.float32), ua32, -round_down(-ub, torch.float32)


def signed_dot(a: Tensor, v: Tensor, n: int | None) -> Tensor:
    """A lower bound on ``<a, v>`` per row computed in a's precision (float64 result): the
    float32 sum minus its rounding bound ``gamma <|a|, |v|>``. ``v`` is (batch, 1 or rows, *s)."""
    n = math.prod(a.shape[2:]) if n is None else n
    if v.shape[1] > 1:  # per-row values
        v32 = v.to(a.dtype)
        exact = (a * v32).flatten(2).sum(-1).double()
        err = (a.abs() * v32.abs()).flatten(2).sum(-1).double() * (1 + gamma(n + 2))
    else:
        v0 = v[:, 0]
        exact = (
            dense_dot(a, v0.to(a.dtype), absolute=False)
            if a.dtype == torch.float64
            else f32dot(a, v0)
        )
        err = absdot(a, v0.abs())
    return exact - gamma(n + 2) * err


def stack_columns(vs: list[Tensor], n: int) -> Tensor:
    """Vectors (batch or 1, *s) as the columns of one (batch or 1, n, k) matrix for ``dots``."""
    return torch.stack([v.reshape(-1, n) for v in vs], -1)


def dots(a: Tensor, V: Tensor) -> Tensor:
    """``<a, v>`` per row for the columns v of ``V`` (``stack_columns``) in one pass over ``a``,
    in a's precision: (batch, rows, k) as float64."""
    b, m = a.shape[:2]
    n = math.prod(a.shape[2:])
    a3 = a.reshape(b, m, n)
    if b > 1 and a3.stride(0) == 0:  # the same rows for every example
        out = torch.einsum("mn,bnk->bmk", a3[0], V.expand(b, -1, -1))
    elif b == 1 and V.shape[0] == 1 and m >= 64:  # one example: k products with a vector
        out = torch.stack([a3[0] @ V[0, :, k] for k in range(V.shape[2])], -1)[None]
    else:  # (k, n) @ (n, rows) per example: measured up to 1.8x faster than (rows, n) @ (n, k)
        out = torch.bmm(V.expand(b, -1, -1).transpose(1, 2), a3.transpose(1, 2)).transpose(1, 2)
    return out.double()


def f32dot(a: Tensor, v: Tensor) -> Tensor:
    """``<a, v>`` per row in a's precision (no float64 copy of a), as float64."""
    b, m = a.shape[:2]
    n = math.prod(a.shape[2:])
    v3 = v.reshape(-1, n, 1).to(a.dtype).expand(b, -1, -1)
    a3 = a.reshape(b, m, n)
    if b > 1 and a3.stride(0) == 0:
        return (a3[0] @ v3[..., 0].T).T.double()
    return torch.bmm(a3, v3)[..., 0].double()


def absdot_rows(a: Tensor, v: Tensor) -> Tensor:
    """``absdot`` with ``v`` (batch, 1 or rows, *s): a value per row where it has one."""
    if v.shape[1] == 1:
        return absdot(a, v)
    n = math.prod(v.shape[2:])
    return (a.abs() * v).flatten(2).sum(-1).double() * (1 + gamma(n + 2))
