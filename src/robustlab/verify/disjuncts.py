"""Whether a disjunct of a property is unreachable on each box, from the linear lower bounds of
its rows: a row's own bound, a convex combination of a conjunction's rows (a grid of weights,
then the dual of the small linear program by exponentiated supergradient ascent), each less the
margin of a ``holds`` (:mod:`margins`)."""

from __future__ import annotations

import torch
from torch import Tensor

from robustlab.verify.margins import margin_of


def _weights(k: int) -> Tensor:
    """Convex combinations of k rows tried for a conjunction: weights in {0, 1, 2}, normalised."""
    grid = torch.cartesian_prod(*[torch.arange(3.0, dtype=torch.float64)] * k).reshape(-1, k)
    grid = grid[(grid > 0).sum(1) > 1]
    return grid / grid.sum(1, keepdim=True)


def disjunct_slack(
    lb, A, bias, lo, hi, d, groups, margin: Tensor | None = None, steps: int = 20
) -> Tensor:
    """(N, disjuncts): a lower bound on the largest ``C_r y - d_r`` over each disjunct's rows,
    minus the margin (:func:`bab.hold_margin`; default: from |d| alone); positive means the
    disjunct is unreachable on the box.

    A conjunction is also refuted by a convex combination of its rows whose linear lower bound is
    positive over the whole box (even when no single row is): a grid of weights for up to 6
    rows, then ``steps`` steps of :func:`_combined` on the boxes still open."""
    margin = margin_of(d) if margin is None else margin
    slack = lb - d - margin
    c, r = (hi + lo) / 2, (hi - lo) / 2
    out = []
    for g in groups:
        best = slack[:, g].amax(1)
        k = g.stop - g.start
        if 1 < k <= 6:
            w = _weights(k).to(lb.dtype)  # (W, k)
            coef = torch.einsum("wk,nki->nwi", w, A[:, g])
            const = (bias[:, g] - d[g] - margin[..., g]) @ w.T  # (N, W)
            val = (coef * c[:, None]).sum(-1) - (coef.abs() * r[:, None]).sum(-1) + const
            best = torch.maximum(best, val.amax(1))
        if k > 1 and (best <= 0).any():
            todo = (best <= 0).nonzero().squeeze(1)
            mg = margin[..., g]
            const = bias[todo][:, g] - d[g] - (mg[todo] if mg.dim() > 1 else mg)
            val = _combined(A[todo][:, g], const, c[todo], r[todo], steps)
            best[todo] = torch.maximum(best[todo], val)
        out.append(best)
    return torch.stack(out, 1)


def _combined(A: Tensor, const: Tensor, c: Tensor, r: Tensor, steps: int) -> Tensor:
    """Per box, the best lower bound over the box of ``sum_r w_r (A_r x + const_r)`` found for
    weights ``w`` on the simplex (N, k rows) by exponentiated supergradient ascent (the dual of
    the linear program "some x in the box meets every row's bound"): every iterate's value is a
    valid bound, the best is kept. At its optimum it is the exact LP answer."""
    n, k, _ = A.shape
    w = torch.full((n, k), 1.0 / k, dtype=A.dtype)
    best = torch.full((n,), -torch.inf, dtype=A.dtype)
    scale = (A.abs() @ r[..., None])[..., 0].amax(1) + const.abs().amax(1) + 1e-300
    for t in range(steps):
        coef = torch.einsum("nk,nki->ni", w, A)
        x = c - r * torch.sign(coef)  # the box's minimising corner
        per = torch.einsum("nki,ni->nk", A, x) + const  # supergradient: each row at x
        best = torch.maximum(best, (w * per).sum(1))
        w = w * torch.exp(per / scale[:, None] * (2.0 / (1 + t) ** 0.5))
        w = w / w.sum(1, keepdim=True)
    return best


def infeasible(lb: Tensor, d: Tensor, groups: list[slice], margin: Tensor | None = None) -> Tensor:
    """(N, disjuncts): disjunct proven unreachable on the box (some row's bound exceeds d by the
    margin, :func:`bab.hold_margin`; default: from |d| alone)."""
    margin = margin_of(d) if margin is None else margin
    ok = lb > d + margin
    return torch.stack([ok[:, g].any(1) for g in groups], 1)


def refuted_rows(lb: Tensor, d: Tensor, margin: Tensor | None = None) -> Tensor:
    """Per row of ``lb`` (N, rows): whether its lower bound refutes ``C_r y <= d_r`` by the
    margin (:func:`bab.hold_margin`, or its batched form :func:`margins`; default: from |d| alone);
    ``d`` and ``margin`` have shape (rows,) or (N, rows)."""
    rows = lb.shape[-1]
    if rows == 0:
        return torch.zeros(lb.shape, dtype=torch.bool)
    return infeasible(lb, d, [slice(i, i + 1) for i in range(rows)], margin)
