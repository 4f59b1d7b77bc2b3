"""Regressions of issue 25: bounds that excluded real outputs, each checked on variants (slopes,
widths, scales, centres that are not float32 numbers), every method and both precisions.

Every reference value is the float64 evaluation of the network (or its exact range where the
network is affine or piecewise linear); tolerances cover only float64 rounding (a few units in
the last place of the values' magnitude), far below the defects' sizes (relative 1e-9..1)."""

import copy
import itertools

import pytest
import torch
from torch import nn

from robustlab.bounds import METHODS, compute_bounds
from robustlab.threat import Box, LpBall

EPS64 = torch.finfo(torch.float64).eps
DTYPES = (torch.float64, torch.float32)
SLOPES = (0.01, 0.1, 0.2, 0.3333, 1 / 7)


def _tol(magnitude: float) -> float:
    """float64 rounding of values whose terms are at most ``magnitude`` (with 64 ulps of room)."""
    return 64 * EPS64 * magnitude


def _box(lo, hi) -> Box:
    t = lambda v: torch.tensor([[v]], dtype=torch.float64)  # noqa: E731
    return Box(t(lo), t(hi))


def _bounds(net, region, method, dtype, **kw):
    b = compute_bounds(net, region, method, dtype=dtype, alpha_iterations=3, **kw)
    return b.lower.double(), b.upper.double()


class LeakMinusLine(nn.Module):
    """``leaky_relu(x) - slope x``: exactly 0 for x <= 0, (1 - slope) x above."""

    def __init__(self, slope: float, functional: bool = False):
        super().__init__()
        self.slope, self.functional = slope, functional
        self.act = nn.LeakyReLU(slope)

    def forward(self, x):
        y = nn.functional.leaky_relu(x, self.slope) if self.functional else self.act(x)
        return y - x * self.slope


# ---- 1. the LeakyReLU slope rounded to float32 inside the relaxation -------------------------


@pytest.mark.parametrize("slope", SLOPES)
@pytest.mark.parametrize(
    "lo,hi", [(-2.0, -1.0), (-1e6, -1e6 + 1), (-3.3e3, -1e-3), (-1.0, 0.5), (-1e6, 1e-6)]
)
def test_leaky_relu_slope_keeps_its_value(slope, lo, hi):
    for functional, method, dtype in itertools.product((False, True), METHODS, DTYPES):
        net = LeakMinusLine(slope, functional)
        lower, upper = _bounds(net, _box(lo, hi), method, dtype)
        true_max = (1 - slope) * max(hi, 0.0)
        tol = _tol(abs(lo) + abs(hi))
        where = f"{method} {dtype} functional={functional}"
        assert lower.item() <= 0.0 + tol, f"lower {lower.item()} > 0 ({where})"
        assert upper.item() >= true_max - tol, f"upper {upper.item()} < {true_max} ({where})"


@pytest.mark.parametrize("slope", SLOPES)
def test_leaky_relu_relaxation_lines_enclose_f(slope):
    """``relax()`` itself on many (l, u) pairs: both lines checked at both ends in float64."""
    from robustlab.bounds.ops.activation import ReLU

    g = torch.Generator().manual_seed(0)
    ends = torch.cat(
        [
            torch.randn(400, 2, generator=g, dtype=torch.float64)
            * 10 ** torch.randint(-6, 7, (400, 1), generator=g)
        ]
    )
    l, u = ends.min(1).values, ends.max(1).values
    op = ReLU(slope=slope)
    la, lb, ua, ub = op.relax(l, u)
    for x in (l, u):
        f = torch.where(x >= 0, x, slope * x)
        tol = _tol(x.abs())
        assert (la * x + lb <= f + tol).all()
        assert (ua * x + ub >= f - tol).all()


# ---- 2. an unstable ReLU narrower than the old width floor (1e-12) ---------------------------


class ScaledRelu(nn.Module):
    """``k relu(x - c)`` with Python constants."""

    def __init__(self, c: float, k: float):
        super().__init__()
        self.c, self.k = c, k

    def forward(self, x):
        return torch.relu(x - self.c) * self.k


@pytest.mark.parametrize("width", [1e-15, 1e-14, 1e-13, 5e-13, 1e-12, 1e-11, 1e-9])
@pytest.mark.parametrize("ratio", [1.0, 0.3, 1 / 7])
@pytest.mark.parametrize("c,k", [(0.0, 1.0), (0.0, 4e9), (0.1, 1.0), (-1 / 3, 1e4)])
def test_narrow_unstable_relu_upper_bound_reaches_the_maximum(width, ratio, c, k):
    net = ScaledRelu(c, k)
    lo, hi = c - width, c + width * ratio
    true_max = k * max(hi - c, 0.0)  # float64, as the network computes it
    for method, dtype in itertools.product(METHODS, DTYPES):
        lower, upper = _bounds(net, _box(lo, hi), method, dtype)
        tol = _tol(k * (abs(lo) + abs(hi)))
        assert upper.item() >= true_max - tol, (
            f"upper {upper.item()} < {true_max} ({method} {dtype})"
        )
        assert lower.item() <= tol


# ---- 3. regions rounded to float32 (sometimes inward) ----------------------------------------

CENTRES = (0.1, 1 / 3, 0.7, 2.2e-3 + 1e-12)


class Shift(nn.Module):
    def __init__(self, c: float, k: float):
        super().__init__()
        self.c, self.k = c, k

    def forward(self, x):
        return (x - self.c) * self.k


@pytest.mark.parametrize("c", CENTRES)
@pytest.mark.parametrize("k", [1e3, 1e6])
def test_float64_point_region_is_not_rounded(c, k):
    x0 = torch.tensor([[c]], dtype=torch.float64)
    assert x0.float().double().item() != c  # not a float32 number
    for method, dtype in itertools.product(METHODS, DTYPES):
        for region in (Box(x0, x0), (LpBall("inf", 0.0), x0), (Box(x0, x0), x0)):
            lower, upper = _bounds(Shift(c, k), region, method, dtype)
            tol = _tol(k * abs(c))
            assert lower.item() <= tol and upper.item() >= -tol, (method, dtype, lower, upper)


@pytest.mark.parametrize("c", CENTRES)
@pytest.mark.parametrize("eps", [1e-9, 1e-6])
def test_linf_and_l2_balls_around_float64_centres(c, eps):
    """The output's exact range over the ball: (x - c) k summed over two inputs."""
    k = 1e6
    net = nn.Sequential(Shift(c, k), nn.Linear(2, 1, bias=False))
    net[1].weight.data.fill_(1.0)
    x0 = torch.full((1, 2), c, dtype=torch.float64)
    for norm, reach in (("inf", 2 * eps), ("2", 2**0.5 * eps)):
        for method, dtype in itertools.product(METHODS, DTYPES):
            lower, upper = _bounds(net, (LpBall(norm, eps), x0), method, dtype)
            tol = _tol(4 * k * abs(c))
            assert lower.item() <= -k * reach + tol, (norm, method, dtype, lower.item())
            assert upper.item() >= k * reach - tol, (norm, method, dtype, upper.item())


@pytest.mark.parametrize("seed", range(3))
def test_float32_bounds_of_a_linear_net_around_float64_centres(seed):
    """A random linear layer (weights up to 1e3), Linf eps 1e-6 around float64 centres: the
    exact minimum and maximum are W c -+ |W| r + b, computed in float64."""
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(16, 4)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(4, 16, generator=g) * 1e3)
    x0 = torch.rand(6, 16, generator=g, dtype=torch.float64) * 0.8 + 0.1
    eps = 1e-6
    W, b = lin.weight.detach().double(), lin.bias.detach().double()
    lo_true = x0 @ W.T + b - eps * W.abs().sum(1)
    hi_true = x0 @ W.T + b + eps * W.abs().sum(1)
    tol = _tol(float(W.abs().sum(1).max()) + float(b.abs().max()))
    for method, dtype in itertools.product(METHODS, DTYPES):
        lower, upper = _bounds(lin, (LpBall("inf", eps), x0), method, dtype)
        assert (lower <= lo_true + tol).all(), (method, dtype, (lower - lo_true).max())
        assert (upper >= hi_true - tol).all(), (method, dtype, (hi_true - upper).max())


def test_spec_matrix_that_float32_cannot_hold():
    """C with entries 0.1 (not float32 numbers) on outputs near 1e4, float32 bounds."""
    lin = nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1e4, -2e3, 5e2], [3e3, 1e4, -7e3]]))
        lin.bias.zero_()
    x0 = torch.tensor([[0.3, 0.6, 0.9]], dtype=torch.float64)
    C = torch.tensor([[[0.1, -0.1], [0.3, 0.7]]], dtype=torch.float64)
    W = lin.weight.detach().double()
    exact = C[0] @ W @ x0[0]
    for method, dtype in itertools.product(METHODS, DTYPES):
        lower, upper = _bounds(lin, Box(x0, x0), method, dtype, C=C)
        tol = _tol(float((C[0].abs() @ W.abs()).sum()))
        assert (lower[0] <= exact + tol).all() and (upper[0] >= exact - tol).all(), (method, dtype)


def test_box_keeps_its_dtype():
    lo = torch.tensor([[0.1]], dtype=torch.float64)
    assert Box(lo, lo + 1).box()[0].dtype == torch.float64
    assert Box(lo.float(), lo.float()).box()[0].dtype == torch.float32
    assert Box(0.1, 0.2).box()[0].item() == 0.1  # a Python number keeps its exact value
    x = torch.zeros(2, 1)
    assert Box(lo, lo + 1).box(x)[0].dtype == torch.float32  # in x0's dtype when given


# ---- 4. BatchNorm folded in float32 ----------------------------------------------------------


@pytest.mark.parametrize("var", [1e-6, 1e-3])
@pytest.mark.parametrize("mean", [1e6, -3e4])
@pytest.mark.parametrize("dims", [1, 2])
def test_batchnorm_bounds_contain_the_network(var, mean, dims):
    g = torch.Generator().manual_seed(0)
    bn = (nn.BatchNorm1d(3) if dims == 1 else nn.BatchNorm2d(3)).eval()
    with torch.no_grad():
        bn.running_var.fill_(var)
        bn.running_mean.fill_(mean)
        bn.weight.copy_(torch.rand(3, generator=g) * 1.5 + 0.5)
        bn.bias.copy_(torch.rand(3, generator=g) * 2 - 1)
    shape = (1, 3) if dims == 1 else (1, 3, 2, 2)
    ref = copy.deepcopy(bn).double()
    scale = float((ref.weight.detach().abs() / torch.sqrt(ref.running_var + bn.eps)).max())
    tol = _tol(scale * 2 * (abs(mean) + 1) + 1)
    for half in (0.0, 1.0):
        lo = torch.full(shape, mean - half)
        hi = torch.full(shape, mean + half)
        with torch.no_grad():
            y_lo, y_hi = ref(lo.double()), ref(hi.double())  # affine: the extremes are the ends
        y_min, y_max = torch.minimum(y_lo, y_hi), torch.maximum(y_lo, y_hi)
        for method, dtype in itertools.product(METHODS, DTYPES):
            lower, upper = _bounds(bn, Box(lo, hi), method, dtype)
            lower, upper = lower.reshape(shape), upper.reshape(shape)
            assert (lower <= y_min + tol).all(), (method, dtype, (lower - y_min).max())
            assert (upper >= y_max - tol).all(), (method, dtype, (y_max - upper).max())
