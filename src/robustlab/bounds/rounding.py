"""Rigorous float32 rounding for the bound engines.

Backward passes in float32 (the expensive part: products of coefficient rows with weights) carry
a bound on their own rounding error, so float32 bounds are as sound as float64 ones. By the
standard bounds on floating-point error (Higham 2002, "Accuracy and Stability of Numerical
Algorithms", ch. 3), a dot product of n terms, in any summation order and with or without fused
multiply-add, is off by at most ``gamma_n |a|.|b|`` with ``gamma_n = n u / (1 - n u)``,
``u = 2^-24``. ``Tracker`` turns that into a bound on the whole pass through a reference
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
from robustlab.bounds.ops.base import Bounds, InputRegion, LinearOp
from robustlab.bounds.ops.linear import Add, Affine, Conv, Generic, Linear, Reshape
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
    # + 1: weights that are not float32 already are rounded to it
    if isinstance(op, Linear):
        return op.weight.shape[0] + 1  # rows @ W sums over the layer's outputs
    if isinstance(op, Conv):
        return op.weight.shape[0] // op.groups * math.prod(op.weight.shape[2:]) + 1
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
    """The float64 side of a float32 backward pass (CROWN), by a reference trajectory.

    A reference point c_j for every node (the input box's centre, pushed forward through the
    affine operations and the relaxations' lower lines, in float64) makes the pass's own
    arithmetic drop out: evaluated at the references, the chain of exact identities the pass
    stands for telescopes to ``C . c_out`` plus, per relaxation, ``<a-, gap>`` (the gap between
    its upper and lower lines at the reference). A step that should give coefficients T on a node
    x and gives T + E then costs only ``|E| . w`` with ``w = max |x - c|`` over x's interval
    bounds, and ``|E|`` is bounded by the standard float32 error bounds. All of it is products
    of float32 coefficients with vectors (no float64 copies of the coefficients), with their own
    rounding bounded the same way. The bound is ``C . c_out + sum <a-, gap> - <|A_0|, r> - sum
    |E| . w`` (r: the input box's radius).
    """

    def __init__(self, graph, bounds, C, target: int) -> None:
        self.graph, self.bounds, self.C, self.target = graph, bounds, C, target
        data = C.data if isinstance(C, Window) else C
        self.value = torch.zeros(C.shape[:2], dtype=torch.float64, device=data.device)
        self._c: dict[int, Tensor] = {}
        self._w: dict[int, Tensor] = {}
        self._relax: dict[int, tuple] = {}

    def relaxation(self, i: int) -> tuple:
        """The relaxation of activation node i without per-row slopes (the reference lines)."""
        if i not in self._relax:
            b = self.bounds[self.graph.nodes[i].inputs[0]]
            self._relax[i] = relax(self.graph.nodes[i].op, b.lower[:, None], b.upper[:, None])
        return self._relax[i]

    def c(self, j: int) -> Tensor:
        """The reference point of node j (float64, one per example)."""
        if j not in self._c:
            node = self.graph.nodes[j]
            if j == 0:
                b = self.bounds[0]
                ref = (b.lower.double() + b.upper.double()) / 2
            elif isinstance(node.op, LinearOp):
                ref = node.op.forward(*[self.c(k) for k in node.inputs])
            elif hasattr(node.op, "relax"):  # activation: its lower line at the input's reference
                la, lb, _, _ = self.relaxation(j)
                ref = la[:, 0].double() * self.c(node.inputs[0]) + lb[:, 0].double()
            else:  # max pooling: the input its relaxation picks
                k = node.inputs[0]
                idx, _, _ = node.op.relax_indices(self.bounds[k].lower, self.bounds[k].upper)
                ck = self.c(k)
                ref = ck.reshape(*ck.shape[:2], -1).gather(2, idx).reshape(-1, *node.shape)
            self._c[j] = ref
        return self._c[j]

    def w(self, j: int) -> Tensor:
        """``max |x - c_j|`` over node j's interval bounds (float64)."""
        if j not in self._w:
            b, c = self.bounds[j], self.c(j)
            self._w[j] = torch.maximum((b.upper.double() - c).abs(), (c - b.lower.double()).abs())
        return self._w[j]

    def linear(self, op: LinearOp, a, ins: list, inputs: tuple[int, ...], shape) -> None:
        """An affine step: its bias is in the references; only its rounding costs."""
        if isinstance(op, Reshape):
            return
        if isinstance(op, Add):  # exact unless an input was broadcast (its coefficients summed)
            for j in inputs:
                w = self.w(j)
                if tuple(w.shape[1:]) != tuple(shape):
                    self.value = self.value - gamma(math.prod(shape)) * absdot(a, _bcast(w, shape))
            return
        n = _terms(op, shape)
        if n:
            self.value = self.value - gamma(n) * absdot(a, op.forward_abs(self.w(inputs[0])))

    def activation(self, i: int, a, la, lb, ua, ub, j: int, neg: Tensor | None = None) -> None:
        """The relaxation step ``a+ la + a- ua`` at node i (input j): ``<a-, gap>`` at the
        reference, a term for slopes that differ from the reference lines (alpha-CROWN), and
        the step's few roundings per entry."""
        la0, lb0, _, _ = self.relaxation(i)
        c, w = self.c(j)[:, None], self.w(j)[:, None]
        gap = (ua.double() - la.double()) * c + ub.double() - lb.double()
        shift = None
        if la.shape[1] > 1 or not (torch.equal(la, la0) and torch.equal(lb, lb0)):
            shift = (la.double() - la0.double()) * c + lb.double() - lb0.double()
        steps = 4 * U * (2 * la.abs() + ua.abs()) * w.to(la.dtype)
        if isinstance(a, Window):
            data = a.data.double()
            neg = data.clamp(max=0)
            val = (neg * a.gather(gap)).flatten(2).sum(-1)
            if shift is not None:
                val = val + (data * a.gather(shift)).flatten(2).sum(-1)
            self.value = (
                self.value
                + val
                - (data.abs() * a.gather(steps.double())).flatten(2).sum(-1) * SLACK
            )
            return
        neg = a.clamp(max=0) if neg is None else neg
        n = math.prod(a.shape[2:])
        if shift is None and gap.shape[1] == 1 and steps.shape[1] == 1:
            # one pass over each of a- and a: <a-, gap>, <|a-|, |gap|> = -<a-, |gap|>, and
            # <|a|, steps> = <a, steps> - 2 <a-, steps>
            g, st = gap[:, 0].to(a.dtype), steps[:, 0]
            dn = _dots(neg, [g, g.abs(), st])
            (da,) = _dots(a, [st]).unbind(-1)
            gn, gabs, sn = dn.unbind(-1)
            k = gamma(n + 2)
            self.value = self.value + gn - k * (-gabs) * (1 + k)
            self.value = self.value - (da - 2 * sn) / (1 - 3 * k) * SLACK
            return
        self.value = self.value + _signed_dot(neg, gap, n)
        if shift is not None:
            self.value = self.value + _signed_dot(a, shift, n)
        self.value = self.value - _absdot_rows(a, steps) * SLACK

    def pool(self, op, a: Tensor, j: int, i: int) -> None:
        """Max pooling: ``<a-, gap>`` at the reference (where the max is not exact, the gap to
        the window's largest upper bound); its transpose sums overlapping windows."""
        l, u = self.bounds[j].lower, self.bounds[j].upper
        _, exact, u_max = op.relax_indices(l, u)
        ci = self.c(i).reshape(*exact.shape)
        gap = ((1 - exact.double()) * (u_max.double() - ci)).reshape(
            -1, 1, *self.graph.nodes[i].shape
        )
        self.value = self.value + _signed_dot(a.clamp(max=0), gap, math.prod(a.shape[2:]))
        if any(k > s for k, s in zip(op.kernel, op.stride, strict=True)):
            self.value = self.value - gamma(math.prod(op.kernel)) * absdot(a, op.forward(self.w(j)))

    def added(self, total, j: int) -> None:
        """``total`` was computed as a sum of two coefficient sets on node j."""
        self.value = self.value - gamma(1) * absdot(total, self.w(j))

    def start(self, term, i: int) -> None:
        """A coefficient set entering at node i (beta-CROWN's split terms): its reference."""
        self.value = self.value + _signed_dot(term, self.c(i)[:, None], math.prod(term.shape[2:]))

    def finish(self, A0, dtype: torch.dtype, linear: dict | None) -> Tensor:
        """The lower bound, rounded down."""
        region = self.bounds[0]
        value = self.value + _signed_dot(self.C, self.c(self.target)[:, None], None)
        r = (region.upper.double() - region.lower.double()) / 2
        box = value - absdot(A0, r)
        if isinstance(region, InputRegion) and region.l2_eps is not None:
            data = A0.data if isinstance(A0, Window) else A0
            d = region.center.double() - self.c(0)
            norm = data.flatten(2).norm(dim=2).double() * (1 + gamma(data[0, 0].numel() + 2))
            ball = value + _signed_dot(A0, d[:, None], None) - region.l2_eps * norm
            box = torch.maximum(box, ball)
        if linear is not None:
            dense = A0.dense() if isinstance(A0, Window) else A0
            linear["A"] = dense
            linear["bias"] = box + absdot(dense, r) - dot64(dense, self.c(0))
        return round_down(box, dtype)


def _signed_dot(a, v: Tensor, n: int | None) -> Tensor:
    """A lower bound on ``<a, v>`` per row computed in a's precision (float64 result): the
    float32 sum minus its rounding bound ``gamma <|a|, |v|>``. ``v`` is (batch, 1 or rows, *s)."""
    if isinstance(a, Window):
        g = a.gather(v)
        data = a.data.double()
        return (data * g).flatten(2).sum(-1)  # small windows: in float64
    n = math.prod(a.shape[2:]) if n is None else n
    if v.shape[1] > 1:  # per-row values
        v32 = v.to(a.dtype)
        exact = (a * v32).flatten(2).sum(-1).double()
        err = (a.abs() * v32.abs()).flatten(2).sum(-1).double() * (1 + gamma(n + 2))
    else:
        v0 = v[:, 0]
        exact = (
            _dense_dot(a, v0.to(a.dtype), absolute=False)
            if a.dtype == torch.float64
            else _f32dot(a, v0)
        )
        err = absdot(a, v0.abs())
    return exact - gamma(n + 2) * err


def _dots(a: Tensor, vs: list[Tensor]) -> Tensor:
    """``<a, v>`` per row for several vectors v (batch or 1, *s) in one pass over ``a``, in a's
    precision: (batch, rows, len(vs)) as float64."""
    b, m = a.shape[:2]
    n = math.prod(a.shape[2:])
    V = torch.stack([v.reshape(-1, n).to(a.dtype) for v in vs], -1)  # (batch or 1, n, k)
    a3 = a.reshape(b, m, n)
    if b > 1 and a3.stride(0) == 0:  # the same rows for every example
        out = torch.einsum("mn,bnk->bmk", a3[0], V.expand(b, -1, -1))
    else:
        out = torch.bmm(a3, V.expand(b, -1, -1))
    return out.double()


def _f32dot(a: Tensor, v: Tensor) -> Tensor:
    """``<a, v>`` per row in a's precision (no float64 copy of a), as float64."""
    b, m = a.shape[:2]
    n = math.prod(a.shape[2:])
    v3 = v.reshape(-1, n, 1).to(a.dtype).expand(b, -1, -1)
    a3 = a.reshape(b, m, n)
    if b > 1 and a3.stride(0) == 0:
        return (a3[0] @ v3[..., 0].T).T.double()
    return torch.bmm(a3, v3)[..., 0].double()


def _bcast(m: Tensor, shape) -> Tensor:
    return m.expand(m.shape[0], *shape)


def _absdot_rows(a, v: Tensor) -> Tensor:
    if v.shape[1] == 1 or isinstance(a, Window):
        return absdot(a, v)
    n = math.prod(v.shape[2:])
    return (a.abs() * v).flatten(2).sum(-1).double() * (1 + gamma(n + 2))


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
