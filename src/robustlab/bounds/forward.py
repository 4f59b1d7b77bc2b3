"""Forward linear bound propagation: every node's lower and upper bounds as linear functions of
the input (symbolic intervals, as in ReluVal / Neurify; forward-mode LiRPA in Xu et al. 2020).

Cheap when the input has few dimensions (the cost grows with the input size, not with the number
of neurons to bound), so it serves as intermediate bounds for input-splitting branch and bound."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from robustlab import deadline
from robustlab.bounds.graph import BoundGraph, Bounds
from robustlab.bounds.ops.activation import ReLU
from robustlab.bounds.ops.base import Activation, InputRegion, LinearOp
from robustlab.bounds.ops.bilinear import Mul
from robustlab.bounds.ops.linear import Add, Affine, Generic, Linear, Reshape, _cast
from robustlab.errors import UnsupportedOperation


class Lin:
    """Linear bounds ``Wl x + bl <= h <= Wu x + bu`` with W of shape (N, *shape, n_in)."""

    def __init__(self, wl: Tensor, bl: Tensor, wu: Tensor, bu: Tensor) -> None:
        self.wl, self.bl, self.wu, self.bu = wl, bl, wu, bu

    def concrete(self, c: Tensor, r: Tensor) -> Bounds:
        """Bounds over the box of center ``c`` and radius ``r`` (N, n_in): ``W c -+ |W| r``
        plus the constants (batched matrix-vector products: 4x the elementwise form's speed
        on ACAS Xu's boxes)."""
        lo = _dot(self.wl, c) - _dot(self.wl.abs(), r) + self.bl
        hi = _dot(self.wu, c) + _dot(self.wu.abs(), r) + self.bu
        return Bounds(lo, hi)

    def take(self, sel: Tensor) -> Lin:
        """The linear bounds of boxes ``sel`` (an index tensor over the batch)."""
        n = self.wl.shape[0]

        def pick(t):
            t = torch.as_tensor(t)
            return t.expand(n, *t.shape[1:])[sel] if t.dim() else t

        return Lin(pick(self.wl), pick(self.bl), pick(self.wu), pick(self.bu))


def _dot(w: Tensor, v: Tensor) -> Tensor:
    """``sum_k w[..., k] v[:, k]``: w (N or 1, *shape, k), v (N, k) -> (N, *shape)."""
    n = v.shape[0]
    w = w.expand(n, *w.shape[1:])
    return torch.bmm(w.reshape(n, -1, w.shape[-1]), v[:, :, None]).reshape(w.shape[:-1])


def _has_rule(op) -> bool:
    if isinstance(op, Generic) and not isinstance(op, (Linear, Affine)):
        return op.nonneg  # |L| known
    return isinstance(op, (LinearOp, Activation, Mul))


def supported(graph: BoundGraph) -> bool:
    """Whether every operation has a forward rule here (linear operations, elementwise
    relaxations, elementwise products; not matrix products or max pooling)."""
    return all(_has_rule(n.op) for n in graph.nodes[1:])


def _columns(fn, w: Tensor, n: int, k: int) -> Tensor:
    """``fn`` applied to each of the k coefficient columns of w (N, *shape, k)."""
    shape = w.shape[1:-1]
    out = fn(w.movedim(-1, 1).reshape(n * k, *shape))
    return out.reshape(n, k, *out.shape[1:]).movedim(1, -1)


def _linear(op: LinearOp, ins: list[Lin], shapes, n: int, k: int, like: Tensor) -> Lin:
    """Any linear operation L: per input, ``L+ (lower) + L- (upper)`` with ``L+- = (L +- |L|) / 2``
    (``|L|`` is ``forward_abs``), and L's bias."""
    zeros = [like.new_zeros(1, *s) for s in shapes]
    bias = op.forward(*zeros)
    wl = wu = 0.0
    bl = bu = bias
    for i, h in enumerate(ins):

        def part(v, absolute: bool, i=i):
            args = [v if j == i else z.expand(len(v), *z.shape[1:]) for j, z in enumerate(zeros)]
            return op.forward_abs(*args) if absolute else op.forward(*args) - bias

        def pos_neg(v: Tensor, cols: bool) -> tuple[Tensor, Tensor]:
            lin = _columns(lambda t: part(t, False), v, n, k) if cols else part(v, False)
            ab = _columns(lambda t: part(t, True), v, n, k) if cols else part(v, True)
            return (lin + ab) / 2, (lin - ab) / 2

        pl, nl = pos_neg(h.wl, True)
        pu, nu = pos_neg(h.wu, True)
        wl, wu = wl + pl + nu, wu + pu + nl
        pl, nl = pos_neg(h.bl, False)
        pu, nu = pos_neg(h.bu, False)
        bl, bu = bl + pl + nu, bu + pu + nl
    return Lin(wl, bl, wu, bu)


def _dense(op: Linear, h: Lin, like: Tensor) -> Lin:
    """``W+ (lower) + W- (upper)`` and its mirror for the upper bounds, as one product of the
    stacked signs ``[W+; W-]`` with the stacked coefficients ``[Wl, Wu]`` (and one for the
    constants): the same sums, two products instead of eight."""
    w = _cast(op.weight, like)
    b = _cast(op.bias, like) if op.bias is not None else 0.0
    wp, wn = w.clamp(min=0), w.clamp(max=0)
    o, k = w.shape[0], h.wl.shape[-1]
    prod = torch.einsum("oi,...ik->...ok", torch.cat([wp, wn]), torch.cat([h.wl, h.wu], -1))
    pos, neg = prod[..., :o, :], prod[..., o:, :]  # W+ [Wl, Wu], W- [Wl, Wu]
    wl, wu = pos[..., :k] + neg[..., k:], pos[..., k:] + neg[..., :k]
    consts = torch.cat([h.bl, h.bu], -1) @ torch.cat(
        [torch.cat([wp, wn]).T, torch.cat([wn, wp]).T], 0
    )  # [bl, bu] @ [[W+ W-], [W- W+]]^T
    return Lin(wl, consts[..., :o] + b, wu, consts[..., o:] + b)


def _scaled(h: Lin, la, lb, ua, ub) -> Lin:
    """``la x + lb <= f(x) <= ua x + ub`` applied to linear bounds of x (slopes of either sign)."""
    e = lambda t: t.unsqueeze(-1)  # noqa: E731
    if bool((la >= 0).all()) and bool((ua >= 0).all()):  # ReLU's: half the products
        return Lin(e(la) * h.wl, la * h.bl + lb, e(ua) * h.wu, ua * h.bu + ub)
    lp, ln, up, un = la.clamp(min=0), la.clamp(max=0), ua.clamp(min=0), ua.clamp(max=0)
    return Lin(
        e(lp) * h.wl + e(ln) * h.wu,
        lp * h.bl + ln * h.bu + lb,
        e(up) * h.wu + e(un) * h.wl,
        up * h.bu + un * h.bl + ub,
    )


def _product(op: Mul, hx: Lin, hy: Lin, bx: Bounds, by: Bounds) -> Lin:
    """McCormick planes (mul.planes) applied to linear bounds of both factors."""
    (xl, yl, cl), (xu, yu, cu) = op.planes(bx, by, None)
    shape = xl.shape

    def grow(h: Lin) -> Lin:
        k = h.wl.shape[-1]
        return Lin(
            h.wl.expand(*shape, k), h.bl.expand(shape), h.wu.expand(*shape, k), h.bu.expand(shape)
        )

    gx, gy = grow(hx), grow(hy)
    zero = torch.zeros_like(cl)
    low_x = _scaled(gx, xl, zero, xu, zero)
    low_y = _scaled(gy, yl, zero, yu, zero)
    return Lin(
        low_x.wl + low_y.wl, low_x.bl + low_y.bl + cl, low_x.wu + low_y.wu, low_x.bu + low_y.bu + cu
    )


def forward_bounds(graph: BoundGraph, region: InputRegion) -> dict[int, Bounds]:
    """Bounds of every node from forward linear bounds, intersected with interval bounds."""
    lo0, hi0 = region.lower, region.upper
    n = lo0.shape[0]
    c = ((hi0 + lo0) / 2).reshape(n, -1)
    r = ((hi0 - lo0) / 2).reshape(n, -1)
    k = c.shape[1]
    eye = torch.eye(k, dtype=lo0.dtype, device=lo0.device).reshape(1, *region.lower.shape[1:], k)
    eye = eye.expand(n, *eye.shape[1:])
    zero = torch.zeros_like(lo0)
    lins = {0: Lin(eye, zero, eye, zero)}
    bounds: dict[int, Bounds] = {0: region}
    for i, node in enumerate(graph.nodes[1:], 1):
        deadline.check()
        op = node.op
        ins = [lins[j] for j in node.inputs]
        if isinstance(op, Linear):
            lin = _dense(op, ins[0], lo0)
        elif isinstance(op, Affine):
            s, t = op._s(lo0), op._t(lo0)
            h = ins[0]
            sp, sn = s.clamp(min=0), s.clamp(max=0)
            se = sp.unsqueeze(-1) if sp.dim() else sp
            ne = sn.unsqueeze(-1) if sn.dim() else sn
            lin = Lin(
                se * h.wl + ne * h.wu,
                sp * h.bl + sn * h.bu + t,
                se * h.wu + ne * h.wl,
                sp * h.bu + sn * h.bl + t,
            )
        elif isinstance(op, Reshape):
            h = ins[0]
            lin = Lin(
                h.wl.reshape(n, *op.shape, k),
                h.bl.reshape(n, *op.shape),
                h.wu.reshape(n, *op.shape, k),
                h.bu.reshape(n, *op.shape),
            )
        elif isinstance(op, Add):
            a, b2 = ins
            if op.sign > 0:
                lin = Lin(a.wl + b2.wl, a.bl + b2.bl, a.wu + b2.wu, a.bu + b2.bu)
            else:
                lin = Lin(a.wl - b2.wu, a.bl - b2.bu, a.wu - b2.wl, a.bu - b2.bl)
        elif isinstance(op, Activation):
            pre = bounds[node.inputs[0]]
            lin = _scaled(ins[0], *op.relax(pre.lower, pre.upper))
        elif isinstance(op, Mul):
            bx, by = (bounds[j] for j in node.inputs)
            lin = _product(op, *ins, bx, by)
        elif _has_rule(op):
            shapes = [graph.nodes[j].shape for j in node.inputs]
            lin = _linear(op, ins, shapes, n, k, lo0)
        else:
            raise UnsupportedOperation(f"no forward bound rule for {type(op).__name__}")
        lins[i] = lin
        ib = op.ibp(*[bounds[j] for j in node.inputs])
        if isinstance(op, ReLU) and op.slope == 0:
            # the relaxed lines over the box are never tighter than max(0, .) of the input's
            # bounds, which they pass through (chord) or lie under (slopes 0 or 1)
            bounds[i] = ib
            continue
        bounds[i] = lin.concrete(c, r).intersect(ib)
    return bounds


def substitute(lin: Lin, a: Tensor) -> tuple[Tensor, Tensor]:
    """Lower bound of ``a . h`` (a: (N, rows, *shape)) from h's linear bounds ``lin``:
    ``a+ (Wl x + bl) + a- (Wu x + bu)``, as coefficients on the input (N, rows, n_in) and a
    constant (N, rows). The step that ends a backward pass at a node whose linear bounds are
    known (mixed mode: ``intermediate.intermediate_bounds``' ``cut``)."""
    n, m = a.shape[:2]
    af = a.reshape(n, m, -1)
    pos, neg = af.clamp(min=0), af.clamp(max=0)
    k, shape = lin.wl.shape[-1], a.shape[2:]
    wl = lin.wl.expand(n, *shape, k).reshape(n, -1, k)
    wu = lin.wu.expand(n, *shape, k).reshape(n, -1, k)
    coef = torch.bmm(pos, wl) + torch.bmm(neg, wu)
    bl = torch.as_tensor(lin.bl, dtype=a.dtype).expand(n, *shape).reshape(n, -1, 1)
    bu = torch.as_tensor(lin.bu, dtype=a.dtype).expand(n, *shape).reshape(n, -1, 1)
    const = (torch.bmm(pos, bl) + torch.bmm(neg, bu))[..., 0]
    return coef, const


FORWARD_MAX_ENTRIES = 2**26  # coefficients of one node's linear bounds per box (float64: 512 MB)


def affordable(graph: BoundGraph, max_entries: int = FORWARD_MAX_ENTRIES) -> bool:
    """Whether forward bounds fit in memory and time: one column per input on every neuron of
    the widest node (a 3 x 52 x 52 image into 16 x 52 x 52 maps: 3.5e8 entries, no)."""
    n_in = math.prod(graph.nodes[0].shape) + 1
    return graph.plan.numel_upto[-1] * n_in <= max_entries
