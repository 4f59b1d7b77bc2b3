"""Disjuncts refuted on boxes (disjuncts.py): a convex combination of a conjunction's rows is a
lower bound of the exact linear program, and positive where that is on most boxes."""

from __future__ import annotations

import pytest
import scipy.optimize as so
import torch

from robustlab.verify import disjuncts


@pytest.mark.parametrize("seed", range(3))
def test_combined_rows_are_a_lower_bound_of_the_linear_program(seed):
    """The weighted rows' bound never exceeds the exact LP value min over the box of the
    largest row (scipy), and is positive on most boxes where that value is."""
    g = torch.Generator().manual_seed(seed)
    n, k, m = 60, 4, 5
    A = torch.randn(n, k, m, generator=g, dtype=torch.float64)
    const = 2 * torch.randn(n, k, generator=g, dtype=torch.float64)
    c = torch.randn(n, m, generator=g, dtype=torch.float64) * 0.1
    r = torch.rand(n, m, generator=g, dtype=torch.float64) + 0.5
    got = disjuncts._combined(A, const, c, r, 200)
    exact = []
    for i in range(n):
        bounds = [(float(c[i, j] - r[i, j]), float(c[i, j] + r[i, j])) for j in range(m)]
        res = so.linprog(
            [0.0] * m + [1.0],
            A_ub=torch.cat([A[i], -torch.ones(k, 1, dtype=torch.float64)], 1).numpy(),
            b_ub=(-const[i]).numpy(),
            bounds=bounds + [(None, None)],
        )
        exact.append(res.fun)
    exact = torch.tensor(exact, dtype=torch.float64)
    assert (got <= exact + 1e-7).all()
    positive = exact > 0.05
    assert int((got[positive] > 0).sum()) >= 0.9 * int(positive.sum())
