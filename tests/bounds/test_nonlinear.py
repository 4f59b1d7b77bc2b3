"""Elementwise functions: relaxations valid on whole intervals (dense grids, random slopes,
degenerate and huge intervals), interval bounds and lines computed by hand, domain errors."""

import math

import pytest
import torch
from torch import nn

from robustlab.bounds import compute_bounds
from robustlab.bounds.ops.base import Bounds
from robustlab.bounds.ops.nonlinear import (
    GELU,
    Abs,
    Clamp,
    Erf,
    Exp,
    GELUTanh,
    Log,
    Pow,
    Sign,
    Sin,
)
from robustlab.errors import RobustlabError
from robustlab.threat import Box

F64 = torch.float64
EPS = torch.finfo(F64).eps

# (op, lower end of the domain, whether that end is open)
OPS = {
    "exp": (Exp(), None),
    "log": (Log(), 0.0),
    "sqrt": (Pow(0.5, "sqrt"), 0.0),
    "rsqrt": (Pow(-0.5, "rsqrt"), 0.0),
    "reciprocal": (Pow(-1.0, "reciprocal"), None),
    "square": (Pow(2.0, "square"), None),
    "cube": (Pow(3.0), None),
    "pow-2": (Pow(-2.0), None),
    "pow1.5": (Pow(1.5), 0.0),
    "pow0.3": (Pow(0.3), 0.0),
    "sin": (Sin(), None),
    "cos": (Sin(phase=math.pi / 2), None),
    "erf": (Erf(), None),
    "gelu": (GELU(), None),
    "gelu-tanh": (GELUTanh(), None),
    "abs": (Abs(), None),
    "clamp": (Clamp(-0.5, 1.0), None),
    "max0.2": (Clamp(0.2, None), None),
    "sign": (Sign(), None),
}


def _intervals(name: str, n: int = 300):
    """Random intervals around the interesting points, a few degenerate, tiny and wide ones."""
    g = torch.Generator().manual_seed(len(name))
    centre = torch.randn(n, generator=g, dtype=F64) * 3
    width = torch.rand(n, generator=g, dtype=F64) ** 3 * 8
    l, u = centre - width / 2, centre + width / 2
    extra_l = torch.tensor([0.0, -1.0, 1.0, 2.0, -1e-13, -20.0, 1e-9, 3.0, 5.0, -1e3], dtype=F64)
    extra_u = torch.tensor(
        [0.0, 1.0, 1.0, 2.0 + 1e-12, 1e-13, 20.0, 2e-9, 40.0, 5.5, 1e3], dtype=F64
    )
    l, u = torch.cat([l, extra_l]), torch.cat([u, extra_u])
    _, edge = OPS[name]
    if edge is not None:  # into the domain; some touch its edge
        l = l.abs() + (1e-3 if name in ("log", "rsqrt") else 0.0)
        u = l + (u - torch.cat([centre - width / 2, extra_l])).abs()
        l[:3] = torch.tensor([0.0, 1e-6, 1e-300]) + (1e-3 if name in ("log", "rsqrt") else 0.0)
    keep = torch.ones_like(l, dtype=torch.bool)
    if name in ("reciprocal", "pow-2"):  # no interval contains 0
        keep = (l > 0) | (u < 0)
    if name == "exp":  # exp(1000) overflows float64 (an error, tested below)
        keep = u < 700
    return l[keep], u[keep]
    return l, u


def _grid(l, u, k: int = 2001):
    t = torch.linspace(0, 1, k, dtype=F64)
    x = torch.minimum(l[:, None] + (u - l)[:, None] * t, u[:, None])  # (rounding overshoots)
    return torch.cat([x, l[:, None], u[:, None]], 1)


@pytest.mark.parametrize("name", list(OPS))
def test_relaxation_lines_hold_on_the_whole_interval(name):
    op, _ = OPS[name]
    l, u = _intervals(name)
    x = _grid(l, u)
    f = op.forward(x)
    alphas = [None, torch.rand(len(l), 2, generator=torch.Generator().manual_seed(2))]
    alphas += [torch.zeros(len(l), 2, dtype=F64), torch.ones(len(l), 2, dtype=F64)]
    for alpha in alphas:
        la, lb, ua, ub = op.relax(l, u, alpha)
        assert torch.isfinite(la).all() and torch.isfinite(ub).all()
        lo = la[:, None] * x + lb[:, None]
        hi = ua[:, None] * x + ub[:, None]
        # the lines hold in exact arithmetic; evaluating them here rounds (a few ulps)
        tol_lo = 4 * EPS * ((la[:, None] * x).abs() + lb[:, None].abs() + f.abs())
        tol_hi = 4 * EPS * ((ua[:, None] * x).abs() + ub[:, None].abs() + f.abs())
        assert (lo <= f + tol_lo).all(), (name, (lo - f - tol_lo).max())
        assert (hi >= f - tol_hi).all(), (name, (f - hi - tol_hi).max())
    b = op.ibp(Bounds(l, u))
    assert (b.lower[:, None] <= f).all() and (b.upper[:, None] >= f).all()
    # interval bounds are tight: within one grid step's change of f of the sampled range
    if name != "sign":
        slack = f[:, :-2].diff(dim=1).abs().amax(1) + 1e-9 * (1 + f.abs().amax(1))
        assert (b.lower >= f.amin(1) - slack).all() and (b.upper <= f.amax(1) + slack).all()


def test_hand_computed_interval_bounds():
    def ibp(op, lo, hi):
        b = op.ibp(Bounds(torch.tensor([lo], dtype=F64), torch.tensor([hi], dtype=F64)))
        return b.lower.item(), b.upper.item()

    cases = [
        (Exp(), 0.0, 1.0, 1.0, math.e),
        (Log(), 1.0, math.e, 0.0, 1.0),
        (Pow(0.5, "sqrt"), 4.0, 9.0, 2.0, 3.0),
        (Pow(-1.0, "reciprocal"), -4.0, -2.0, -0.5, -0.25),
        (Pow(2.0), -1.0, 2.0, 0.0, 4.0),
        (Pow(3.0), -1.0, 2.0, -1.0, 8.0),
        (Sin(), 1.0, 2.0, math.sin(1.0), 1.0),
        (Sin(), 2.0, 3.0, math.sin(3.0), math.sin(2.0)),
        (Sin(), -10.0, 10.0, -1.0, 1.0),
        (Sin(phase=math.pi / 2), 2.0, 4.0, -1.0, math.cos(2.0)),
        (GELU(), -3.0, 1.0, -0.16997120747, 0.8413447460685429),
        (Abs(), -1.0, 3.0, 0.0, 3.0),
        (Clamp(0.0, 1.0), -1.0, 2.0, 0.0, 1.0),
        (Sign(), -1.0, 2.0, -1.0, 1.0),
        (Sign(), 0.0, 2.0, 0.0, 1.0),
    ]
    for op, lo, hi, want_lo, want_hi in cases:
        got = ibp(op, lo, hi)
        assert got[0] == pytest.approx(want_lo, abs=1e-9), (op, got)
        assert got[1] == pytest.approx(want_hi, abs=1e-9), (op, got)
        assert got[0] <= want_lo + 1e-11 and got[1] >= want_hi - 1e-11, (op, got)


def test_hand_computed_lines():
    """exp on [0, 1]: tangent at 1/2 below, chord above; log on [1, e]: chord below, tangent at
    the middle above; sign across 0: through (0, -1) and (u, 1), (l, -1) and (0, 1)."""
    one = torch.tensor([1.0], dtype=F64)
    la, lb, ua, ub = Exp().relax(0 * one, one)
    h = math.exp(0.5)
    assert la.item() == pytest.approx(h) and lb.item() == pytest.approx(h / 2)
    assert ua.item() == pytest.approx(math.e - 1) and ub.item() == pytest.approx(1.0)
    la, lb, ua, ub = Log().relax(one, math.e * one)
    m = (1 + math.e) / 2
    assert la.item() == pytest.approx(1 / (math.e - 1)) and lb.item() == pytest.approx(-la.item())
    assert ua.item() == pytest.approx(1 / m) and ub.item() == pytest.approx(math.log(m) - 1)
    la, lb, ua, ub = Sign().relax(-one, 2 * one)
    assert (la.item(), lb.item()) == pytest.approx((1.0, -1.0))  # u > -l: the steep lower line
    assert (ua.item(), ub.item()) == pytest.approx((0.0, 1.0))


def test_crown_through_exp_by_hand():
    """y = exp(x) - (e - 1) x on [0, 1]: CROWN's upper bound is exactly 1 (the chord); its lower
    bound the tangent at 1/2 at x = 1: e^0.5 * 1.5 - (e - 1); alpha-CROWN moves the tangent
    towards the true minimum (e - 1)(1 - log(e - 1))."""

    class Net(nn.Module):
        def forward(self, x):
            return torch.exp(x) - (math.e - 1) * x

    region = Box(torch.zeros(1, 1, dtype=F64), torch.ones(1, 1, dtype=F64))
    crown = compute_bounds(Net(), region, "crown")
    assert crown.upper.item() == pytest.approx(1.0, abs=1e-6)  # (rounded outward to float32)
    assert crown.lower.item() == pytest.approx(1.5 * math.exp(0.5) - (math.e - 1), abs=1e-6)
    alpha = compute_bounds(Net(), region, "alpha-crown", bound_upper=False)
    best = (math.e - 1) * (1 - math.log(math.e - 1))
    assert crown.lower.item() < alpha.lower.item() <= best
    assert alpha.lower.item() == pytest.approx(best, abs=2e-2)


@pytest.mark.parametrize(
    "fn, lo, match",
    [
        (torch.log, 0.0, "log at node 'log' of an input in \\[0, 1\\]"),
        (torch.sqrt, -0.5, "sqrt at node 'sqrt'.*x >= 0"),
        (torch.reciprocal, -1.0, "reciprocal at node 'reciprocal'.*x != 0"),
        (lambda x: 1.0 / x, -1.0, "reciprocal.*cannot be proven"),
        (lambda x: x**-0.5, 0.0, "x > 0"),
    ],
)
def test_outside_the_domain_is_an_error_naming_the_node(fn, lo, match):
    class Net(nn.Module):
        def forward(self, x):
            return fn(x)

    region = Box(torch.full((1, 2), lo, dtype=F64), torch.ones(1, 2, dtype=F64))
    for method in ("ibp", "crown"):
        with pytest.raises(RobustlabError, match=match):
            compute_bounds(Net(), region, method)


def test_exp_overflow_is_an_error_not_nan():
    class Net(nn.Module):
        def forward(self, x):
            return torch.exp(x)

    region = Box(torch.zeros(1, 1, dtype=F64), torch.full((1, 1), 800.0, dtype=F64))
    with pytest.raises(RobustlabError, match="exp at node 'exp' overflows"):
        compute_bounds(Net(), region, "crown")


def test_degenerate_intervals_are_bounded_by_function_values():
    x = torch.tensor([0.3, -2.0, 1e-13, 5.0], dtype=F64)
    for op in (Exp(), Sin(), GELU(), Pow(2.0), Erf(), Abs()):
        la, lb, ua, ub = op.relax(x, x)
        f = op.forward(x)
        assert (la == 0).all() and (ua == 0).all()
        assert (lb <= f).all() and (ub >= f).all()
        assert ((ub - lb) <= 1e-13 * (1 + f.abs())).all()


def test_tanh_gelu_by_hand():
    """tanh-GELU on [-3, 1]: its minimum near x = -0.75 (about -0.170) and f(1) =
    (1 + tanh(c (1 + a))) / 2 with c = sqrt(2 / pi), a = 0.044715; the inflection points where
    its second derivative changes sign (checked by autograd on a fine grid)."""
    op = GELUTanh()
    b = op.ibp(Bounds(torch.tensor([-3.0], dtype=F64), torch.tensor([1.0], dtype=F64)))
    x = torch.linspace(-3.0, 1.0, 400001, dtype=F64)
    y = torch.nn.functional.gelu(x, approximate="tanh")
    f1 = 0.5 * (1 + math.tanh(math.sqrt(2 / math.pi) * (1 + 0.044715)))
    assert float(b.upper) >= f1 and float(b.upper) - f1 < 1e-12
    assert float(b.lower) <= float(y.min()) and float(y.min()) - float(b.lower) < 1e-9
    assert -0.1701 < float(y.min()) < -0.1699
    z = torch.linspace(-4, 4, 80001, dtype=F64, requires_grad=True)
    (d,) = torch.autograd.grad(op.f(z).sum(), z, create_graph=True)
    (d2,) = torch.autograd.grad(d.sum(), z)
    assert ((d2 > 0) == (z.detach().abs() < op.R)).float().mean() > 1 - 1e-4
