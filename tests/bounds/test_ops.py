"""Hand-computed bounds for each operation's rule."""

import math

import pytest
import torch
from torch import nn

from robustlab.bounds import compute_bounds
from robustlab.bounds.graph import graph_of
from robustlab.bounds.ops.activation import ReLU, SShaped
from robustlab.bounds.ops.pool import MaxPool
from robustlab.errors import UnsupportedOperation
from robustlab.threat import Box


def box(lo, hi):
    return Box(torch.tensor([lo], dtype=torch.float64), torch.tensor([hi], dtype=torch.float64))


@pytest.mark.parametrize("method", ["ibp", "crown", "alpha-crown"])
def test_all_ones_linear(method):
    lin = nn.Linear(3, 1)
    nn.init.ones_(lin.weight)
    nn.init.constant_(lin.bias, 2.0)
    b = compute_bounds(lin, box([0.0, 1.0, 2.0], [2.0, 3.0, 4.0]), method)
    assert b.lower.item() == 5.0 and b.upper.item() == 11.0


def test_relu_relaxation_values():
    l, u = torch.tensor([-1.0, -3.0, 1.0, -2.0]), torch.tensor([3.0, 1.0, 2.0, -1.0])
    la, lb, ua, ub = ReLU().relax(l, u)
    assert la.tolist() == [1.0, 0.0, 1.0, 0.0]  # adaptive: 1 where u > -l
    assert ua.tolist() == [0.75, 0.25, 1.0, 0.0]
    assert ub.tolist() == [0.75, 0.75, 0.0, 0.0]
    la, _, ua, ub = ReLU(slope=0.1).relax(torch.tensor([-1.0]), torch.tensor([1.0]))
    assert la.item() == pytest.approx(0.1) and ua.item() == pytest.approx(0.55)
    assert ub.item() == pytest.approx(0.45)


def test_relu_network_by_hand():
    """y = relu(x1 + x2) - relu(x1 - x2) on [-1, 1]^2: CROWN gives [-2, 2] (IBP too)."""
    net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU(), nn.Linear(2, 1, bias=False))
    net[0].weight.data = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    net[2].weight.data = torch.tensor([[1.0, -1.0]])
    b = compute_bounds(net, box([-1.0, -1.0], [1.0, 1.0]), "crown")
    assert b.lower.item() == pytest.approx(-2.0) and b.upper.item() == pytest.approx(2.0)
    # on [0, 1] x [0, 0.5]: h1 in [0, 1.5] active, h2 in [-0.5, 1] unstable
    b = compute_bounds(net, box([0.0, 0.0], [1.0, 0.5]), "crown")
    # upper: relu(h2) >= h2 (adaptive slope 1 as u > -l), so out <= h1 - h2 = 2 x2 <= 1;
    # lower: relu(h2) <= 2/3 h2 + 1/3, so out >= x1/3 + 5/3 x2 - 1/3 >= -1/3
    assert b.upper.item() == pytest.approx(1.0) and b.lower.item() == pytest.approx(-1 / 3)


@pytest.mark.parametrize("kind", ["sigmoid", "tanh"])
def test_s_shaped_relaxation_encloses_function(kind):
    op = SShaped(kind)
    for lo, hi in [(-3.0, -1.0), (0.5, 2.0), (-2.0, 3.0), (-0.1, 0.2), (-4.0, 0.5), (1.0, 1.0)]:
        l, u = torch.tensor([lo], dtype=torch.float64), torch.tensor([hi], dtype=torch.float64)
        la, lb, ua, ub = op.relax(l, u)
        xs = torch.linspace(lo, hi, 1001, dtype=torch.float64)
        f = op.forward(xs)
        assert (la * xs + lb <= f).all() and (ua * xs + ub >= f).all()
    # a convex piece: the upper line is the chord
    la, lb, ua, ub = SShaped("sigmoid").relax(torch.tensor([-2.0]), torch.tensor([-1.0]))
    s = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    assert ua.item() == pytest.approx(s(-1) - s(-2), rel=1e-5)


def test_maxpool_relaxation():
    pool = MaxPool((2, 2), (2, 2), (0, 0))
    l = torch.tensor([[[[0.0, 1.0], [2.0, -1.0]]]])
    u = torch.tensor([[[[0.5, 1.5], [3.0, 0.0]]]])
    index, exact, u_max = pool.relax_indices(l, u)
    assert index.item() == 2 and exact.item() and u_max.item() == 3.0
    net = nn.Sequential(nn.MaxPool2d(2), nn.Flatten())
    b = compute_bounds(net, Box(l.double(), u.double()), "crown")
    assert b.lower.item() == 2.0 and b.upper.item() == 3.0


def test_maxpool_backward_bounds_or_rows_shared_by_the_batch():
    # batch-1 bounds with batch-3 rows (and batch-1 rows with batch-3 bounds) give what the
    # same bounds or rows repeated over the batch give
    g = torch.Generator().manual_seed(0)
    pool = MaxPool((2, 2), (2, 2), (0, 0))
    l = torch.randn(1, 2, 4, 4, generator=g, dtype=torch.float64)
    u = l + torch.rand(1, 2, 4, 4, generator=g, dtype=torch.float64)
    A = torch.randn(3, 5, 2, 2, 2, generator=g, dtype=torch.float64)
    want = pool.backward(A, l.expand(3, -1, -1, -1), u.expand(3, -1, -1, -1))
    for got, ref in zip(pool.backward(A, l, u), want, strict=True):
        assert torch.equal(got, ref)
    want = pool.backward(
        A[:1].expand(3, -1, -1, -1, -1), l.expand(3, -1, -1, -1), u.expand(3, -1, -1, -1)
    )
    got = pool.backward(A[:1], l.expand(3, -1, -1, -1), u.expand(3, -1, -1, -1))
    for g_, ref in zip(got, want, strict=True):
        assert torch.equal(g_, ref)


def test_conv_avgpool_batchnorm_by_hand():
    conv = nn.Conv2d(1, 1, 2, bias=True)
    conv.weight.data = torch.tensor([[[[1.0, -1.0], [0.5, 0.0]]]])
    conv.bias.data = torch.tensor([1.0])
    bn = nn.BatchNorm2d(1).eval()
    bn.running_mean.fill_(1.0)
    bn.running_var.fill_(4.0 - 1e-5)
    net = nn.Sequential(conv, bn, nn.AvgPool2d(1), nn.Flatten())
    b = compute_bounds(net, Box(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)), "crown")
    # conv in [1 - 1, 1 + 1.5] = [0, 2.5]; bn: (z - 1) / 2 in [-0.5, 0.75]
    assert b.lower.item() == pytest.approx(-0.5) and b.upper.item() == pytest.approx(0.75)


def test_residual_add_is_exact_for_linear_branches():
    class Net(nn.Module):
        def forward(self, x):
            return x + (-1.0) * x + 2.0  # exactly 2, but IBP cannot see the cancellation

    lo, hi = torch.zeros(1, 3), torch.ones(1, 3)
    crown = compute_bounds(Net(), Box(lo, hi), "crown")
    ibp = compute_bounds(Net(), Box(lo, hi), "ibp")
    assert torch.allclose(crown.lower, torch.full((1, 3), 2.0))
    assert torch.allclose(crown.upper, torch.full((1, 3), 2.0))
    assert torch.allclose(ibp.upper, torch.full((1, 3), 3.0))


def test_unsupported_operation_names_node_and_list():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return torch.cumprod(self.fc(x), 1)

    with pytest.raises(UnsupportedOperation, match=r"cumprod.*at node 'cumprod'.*supported: "):
        compute_bounds(Net(), Box(torch.zeros(1, 3), torch.ones(1, 3)))


def test_concatenation_is_exact_for_linear_branches():
    """cat of x and 2x for x in [0, 2]^2: coordinates [0, 2], [0, 2], [0, 4], [0, 4]; an all-ones
    layer on top gives [0, 12] exactly."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.sum = nn.Linear(4, 1, bias=False)
            nn.init.ones_(self.sum.weight)

        def forward(self, x):
            return self.sum(torch.cat([x, 2 * x], dim=1))

    net = Net()
    assert any(type(n.op).__name__ == "Cat" for n in graph_of(net, (2,)).nodes[1:])
    for method in ("ibp", "crown"):
        b = compute_bounds(net, box([0.0, 0.0], [2.0, 2.0]), method)
        assert b.lower.item() == 0.0 and b.upper.item() == 12.0, method
