"""The softmax's joint relaxation (ops/softmax.py, the LSE bounds of Wei et al. 2023): lines
computed by hand on a two-entry row, and sound against float64 sampling on random boxes (wide,
narrow, point, far from zero); the rule soundness suite covers it inside networks."""

import math

import pytest
import torch

from robustlab.bounds.ops.base import Bounds
from robustlab.bounds.ops.softmax import Softmax


def _lines(op: Softmax, b: Bounds, n: int):
    """Coefficients (batch, 2 n, n) and biases (batch, 2 n) of the lower bounds of ``s_k`` and of
    ``-s_k`` for every entry k of a (batch, n) input."""
    eye = torch.eye(n, dtype=torch.float64).expand(b.lower.shape[0], n, n)
    (a,), bias = op.backward(torch.cat([eye, -eye], 1), b, [(n,)])
    return a, bias


def test_two_entries_by_hand():
    """x1 = 0 and x2 in [-1, 1]: s_1 = 1 / (1 + e^{x2}) in [1 / (1 + e), 1 / (1 + e^-1)].
    Lower line (tangent at 0 of e^{x1} / SE, SE = (x1 + 1) + (sinh(1) x2 + cosh(1))):
    1 / (1 + cosh 1) - sinh(1) / (1 + cosh 1)^2 x2. Upper line (z_1 = x1 - LSE(x) in
    [-log(1 + e), -log(1 + e^-1)], a width of 1; chord slope c = tanh(1/2); tangent at 0):
    s_1 <= pu - c (zu + log 2) - (c / 2) x2."""
    op = Softmax(0)
    b = Bounds(
        torch.tensor([[0.0, -1.0]], dtype=torch.float64), torch.tensor([[0.0, 1.0]]).double()
    )
    ib = op.ibp(b)
    e = math.e
    assert ib.lower[0, 0].item() == pytest.approx(1 / (1 + e), abs=1e-12)
    assert ib.upper[0, 0].item() == pytest.approx(1 / (1 + 1 / e), abs=1e-12)
    a, bias = _lines(op, b, 2)
    ch, sh = math.cosh(1.0), math.sinh(1.0)
    assert a[0, 0, 1].item() == pytest.approx(-sh / (1 + ch) ** 2, abs=1e-12)
    assert bias[0, 0].item() == pytest.approx(1 / (1 + ch), abs=1e-12)
    c = math.tanh(0.5)
    pu, zu = 1 / (1 + 1 / e), -math.log(1 + 1 / e)
    # row 2 bounds -s_1 from below: its coefficients and bias are the upper line's, negated
    assert -a[0, 2, 1].item() == pytest.approx(-c / 2, abs=1e-12)
    assert -bias[0, 2].item() == pytest.approx(pu - c * (zu + math.log(2.0)), abs=1e-12)


@pytest.mark.parametrize("offset", [0.0, 300.0])
def test_lines_contain_sampled_softmax(offset):
    g = torch.Generator().manual_seed(0)
    for trial in range(60):
        n = 2 + trial % 6
        c = torch.randn(2, 3, n, generator=g, dtype=torch.float64) * 3 + offset
        scale = [0.0, 1e-9, 0.3, 4.0, 40.0][trial % 5]
        r = torch.rand(2, 3, n, generator=g, dtype=torch.float64) * scale
        b = Bounds(c - r, c + r)
        op = Softmax(1)
        u = torch.rand(10_000, 2, 3, n, generator=g, dtype=torch.float64)
        x = c + r * (2 * u - 1)
        corners = torch.randint(0, 2, (500, 2, 3, n), generator=g).double()
        x = torch.cat([x, c - r + 2 * r * corners])
        y = torch.softmax(x, -1)
        ib = op.ibp(b)
        assert (y >= ib.lower).all() and (y <= ib.upper).all()
        eye = torch.eye(3 * n, dtype=torch.float64).reshape(1, 3 * n, 3, n).expand(2, -1, -1, -1)
        A = torch.cat([eye, -eye], 1)
        (a,), bias = op.backward(A, b, [(3, n)])
        lin = torch.einsum("bkij,sbij->sbk", a, x) + bias
        val = torch.einsum("bkij,sbij->sbk", A, y)
        assert (lin <= val).all(), float((lin - val).max())


def test_unbounded_rows_get_constant_lines():
    op = Softmax(0)
    lo = torch.tensor([[-math.inf, 0.0], [0.0, 1.0]], dtype=torch.float64)
    hi = torch.tensor([[1.0, 2.0], [0.5, 1.5]], dtype=torch.float64)
    b = Bounds(lo, hi)
    ib = op.ibp(b)
    assert ib.lower[0].tolist() == [0.0, 0.0] and ib.upper[0].tolist() == [1.0, 1.0]
    a, bias = _lines(op, b, 2)
    assert a[0].abs().max().item() == 0.0
    assert bias[0].tolist() == [0.0, 0.0, -1.0, -1.0]  # s >= 0 and -s >= -1
    assert torch.isfinite(a[1]).all() and a[1].abs().max() > 0


def test_lines_are_reused_only_for_the_same_unchanged_bounds():
    op = Softmax(0)
    lo = torch.tensor([[0.0, -1.0, 0.5]], dtype=torch.float64)
    b = Bounds(lo, lo + 1.0)
    first = op._cached_lines(b)
    assert op._cached_lines(b) is first
    b.lower[0, 1] = -2.0  # changed in place: computed again, as fresh
    again = op._cached_lines(b)
    assert again is not first
    fresh = Softmax(0).lines(b)
    for x, y in zip(again, fresh, strict=True):
        for s, t in zip(x, y, strict=True):
            assert torch.equal(s, t)
