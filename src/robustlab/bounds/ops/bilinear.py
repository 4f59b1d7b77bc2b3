"""Products of two input-dependent tensors: elementwise ``x * y`` and ``x @ y`` (attention), relaxed
by McCormick planes as in auto_LiRPA (Xu et al. 2020, arXiv:2002.12920; Shi et al. 2020,
"Robustness Verification for Transformers", arXiv:2002.06622).

For x in [lx, ux] and y in [ly, uy], exactly (the differences are products of signed gaps):
``xy >= ly x + lx y - lx ly``, ``xy >= uy x + ux y - ux uy`` (lower planes) and
``xy <= uy x + lx y - lx uy``, ``xy <= ly x + ux y - ux ly`` (upper planes); any convex combination
of two valid planes is valid. The elementwise product's combinations are alpha-CROWN parameters.
Their bookkeeping is not part of the float32 rounding tracker (float32 requests are computed in
float64, see ``backward.backward``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from robustlab.bounds.ops.base import Bounds, Op
from robustlab.bounds.ops.linear import _unbroadcast

EXACT_IBP_TERMS = 2**20  # matmul interval products term by term up to this many per sample


class Bilinear(Op):
    """A product of two input-dependent operands, relaxed by planes in both."""

    n_inputs = 2
    tracked = False  # float32: computed in float64 (backward.backward)
    has_alpha = False

    def backward(
        self, A: Tensor, bx: Bounds, by: Bounds, in_shapes, alpha: Tensor | None = None
    ) -> tuple[list[Tensor], Tensor]:
        """Coefficients on both operands and the bias of a lower bound of ``A . (x op y)``."""
        raise NotImplementedError


def _corners(bx: Bounds, by: Bounds) -> Bounds:
    prods = torch.stack(
        [bx.lower * by.lower, bx.lower * by.upper, bx.upper * by.lower, bx.upper * by.upper]
    )
    return Bounds(prods.amin(0), prods.amax(0))


@dataclass(eq=False)
class Mul(Bilinear):
    """Elementwise ``x * y`` with broadcasting (operands of the same rank)."""

    has_alpha: bool = True

    def forward(self, x, y):
        return x * y

    def ibp(self, bx, by):
        return _corners(bx, by)

    def planes(self, bx: Bounds, by: Bounds, alpha: Tensor | None):
        """(x, y, constant) coefficients of the lower and the upper plane, on the output's shape
        (with a rows axis when ``alpha`` has one)."""
        lx, ux, ly, uy = torch.broadcast_tensors(bx.lower, bx.upper, by.lower, by.upper)
        if alpha is None:  # auto_LiRPA's choice: the planes through lx
            return (ly, lx, -lx * ly), (uy, lx, -lx * uy)
        lx, ux, ly, uy = (t[:, None] for t in (lx, ux, ly, uy))
        a, b = alpha[..., 0].to(lx.dtype), alpha[..., 1].to(lx.dtype)
        lower = (
            a * ly + (1 - a) * uy,
            a * lx + (1 - a) * ux,
            -(a * lx * ly + (1 - a) * ux * uy),
        )
        upper = (
            b * uy + (1 - b) * ly,
            b * lx + (1 - b) * ux,
            -(b * lx * uy + (1 - b) * ux * ly),
        )
        return lower, upper

    def backward(self, A, bx, by, in_shapes, alpha=None):
        (xl, yl, cl), (xu, yu, cu) = self.planes(bx, by, alpha)
        if alpha is None:
            xl, yl, cl, xu, yu, cu = (t[:, None] for t in (xl, yl, cl, xu, yu, cu))
        pos, neg = A.clamp(min=0), A.clamp(max=0)
        ax = pos * xl + neg * xu
        ay = pos * yl + neg * yu
        bias = (pos * cl + neg * cu).flatten(2).sum(-1)
        return [_unbroadcast(ax, in_shapes[0]), _unbroadcast(ay, in_shapes[1])], bias

    def alpha_start(self, bx, by):
        shape = torch.broadcast_shapes(bx.lower.shape, by.lower.shape)
        return torch.ones(*shape, 2)

    def clamp_alpha_(self, a):
        a.clamp_(0.0, 1.0)


@dataclass(eq=False)
class MatMul(Bilinear):
    """``x @ y`` of two input-dependent tensors (same rank, at least 2 per sample), each product
    ``x_it y_tj`` relaxed by the planes through ``lx`` (lower: with ``ly``, upper: with ``uy``)."""

    def forward(self, x, y):
        return x @ y

    def ibp(self, bx, by):
        n, k = bx.lower.shape[-2:]
        m = by.lower.shape[-1]
        if n * k * m <= EXACT_IBP_TERMS:  # exact interval products, summed
            ex = Bounds(bx.lower[..., :, :, None], bx.upper[..., :, :, None])
            ey = Bounds(by.lower[..., None, :, :], by.upper[..., None, :, :])
            p = _corners(ex, ey)
            return Bounds(p.lower.sum(-2), p.upper.sum(-2))
        # midpoint-radius (Rump): |xy - cx cy| <= |cx| ry + rx |cy| + rx ry
        cx, rx = (bx.upper + bx.lower) / 2, (bx.upper - bx.lower) / 2
        cy, ry = (by.upper + by.lower) / 2, (by.upper - by.lower) / 2
        c = cx @ cy
        r = cx.abs() @ ry + rx @ cy.abs() + rx @ ry
        return Bounds(c - r, c + r)

    def backward(self, A, bx, by, in_shapes, alpha=None):
        lx = bx.lower[:, None]
        ly, uy = by.lower[:, None], by.upper[:, None]
        pos, neg = A.clamp(min=0), A.clamp(max=0)
        ax = pos @ ly.transpose(-1, -2) + neg @ uy.transpose(-1, -2)
        ay = lx.transpose(-1, -2) @ A
        bias = -((pos * (lx @ ly)).flatten(2).sum(-1) + (neg * (lx @ uy)).flatten(2).sum(-1))
        return [_unbroadcast(ax, in_shapes[0]), _unbroadcast(ay, in_shapes[1])], bias
