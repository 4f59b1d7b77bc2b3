"""Input splitting's branching helpers (:mod:`bab`): the rows whose bounds a split should
improve, the look-ahead's candidate inputs, and which of its children are bounded."""

from __future__ import annotations

import torch
from torch import Tensor


def rows_to_improve(lb, A, op, d, groups, weakest_first: bool = False) -> Tensor:
    """Per box, the input coefficients (N, 2, inputs) of two rows whose bounds branching should
    improve: the row closest to refuting the weakest open disjunct (a conjunction is refuted by
    any one of its rows), and the weakest open row of all (that one first if ``weakest_first``)."""
    slack = lb - d
    best_row, best_val = [], []
    for g in groups:
        v, i = slack[:, g].max(1)
        best_row.append(i + g.start)
        best_val.append(v)
    rows = torch.stack(best_row, 1)
    vals = torch.where(op, torch.stack(best_val, 1), torch.inf)
    n = torch.arange(len(A))
    closest = rows[n, vals.argmin(1)]
    row_open = torch.zeros_like(slack, dtype=torch.bool)
    for k, g in enumerate(groups):
        row_open[:, g] = op[:, k : k + 1]
    weakest = torch.where(row_open, slack, torch.inf).argmin(1)
    first, second = (weakest, closest) if weakest_first else (closest, weakest)
    return torch.stack([A[n, first], A[n, second]], 1)


def candidates(score: Tensor, m: int) -> Tensor:
    """(n, m) distinct inputs to split, taken in turn from each row's largest scores
    (score: (n, rows, inputs))."""
    n, rows, k = score.shape
    if m >= k:
        return torch.arange(k).expand(n, k)
    taken = torch.zeros(n, k, dtype=torch.bool)
    out = []
    for j in range(m):
        pick = score[:, j % rows].masked_fill(taken, -torch.inf).argmax(1)
        taken[torch.arange(n), pick] = True
        out.append(pick)
    return torch.stack(out, 1)


def to_bound(worth: Tensor) -> Tensor | None:
    """The look-ahead's children to bound, as positions in its (candidate, half, box) order, of
    the candidates ``worth`` (n, m) allows (None: all of them)."""
    n, m = worth.shape
    on = worth.T[:, None, :].expand(m, 2, n).reshape(-1)
    return None if bool(on.all()) else on.nonzero().squeeze(1)


def spread(x: Tensor, idx: Tensor, total: int, fill: float) -> Tensor:
    """``x``'s rows at positions ``idx`` of ``total`` rows, the others ``fill``."""
    out = x.new_full((total, *x.shape[1:]), fill)
    return out.index_copy_(0, idx, x)
