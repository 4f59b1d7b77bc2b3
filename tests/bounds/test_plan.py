"""The compiled plan and the fast paths of the backward pass (issue 17): the same bounds as the
plain computation, and a float32 fallback that stays rigorous."""

import math

import pytest
import torch
from torch import nn

from robustlab.bounds import compute_bounds
from robustlab.bounds.api import _float32_pays, input_region
from robustlab.bounds.backward import backward, two_sided
from robustlab.bounds.graph import graph_of
from robustlab.bounds.ibp import interval_all
from robustlab.bounds.intermediate import intermediate_bounds
from robustlab.bounds.ops.base import InputRegion
from robustlab.bounds.plan import (
    ACTIVATION,
    FLOAT32_MIN_FAN_IN,
    INPUT,
    LINEAR,
    fan_in,
    float32_macs,
    float32_pays,
)
from robustlab.bounds.rows import identity_rows
from robustlab.bounds.window import identity_windows
from robustlab.threat import Box, LpBall

from .nets import KINDS, make


def _mlp(d_in: int, width: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(d_in, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 5)
    ).eval()


def test_plan_describes_the_graph():
    graph = graph_of(_mlp(6, 8), (6,))
    plan = graph.plan
    assert plan is graph.plan  # built once
    assert plan.kinds == (INPUT, LINEAR, ACTIVATION, LINEAR, ACTIVATION, LINEAR)
    assert plan.in_shapes[3] == ((8,),)
    assert plan.after_nonlinear == (False, False, False, True, True, True)
    assert plan.needs == {1: True, 3: True}
    assert plan.numel_upto == (6, 8, 8, 8, 8, 8)
    assert plan.ibp_exact == (True, True, False, False, False, False)


def _two_maps() -> nn.Module:
    """x -> [x1 + x2, x1 - x2] -> their sum - 1 = 2 x1 - 1 -> relu: two mixing linear maps
    before the first nonlinearity."""
    first, second = nn.Linear(2, 2, bias=False), nn.Linear(2, 1)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[1.0, 1.0], [1.0, -1.0]]))
        second.weight.copy_(torch.tensor([[1.0, 1.0]]))
        second.bias.fill_(-1.0)
    return nn.Sequential(first, nn.Flatten(), second, nn.ReLU()).eval()


def test_ibp_exact_stops_at_a_second_mixing_map():
    plan = graph_of(_two_maps(), (2,)).plan
    # input, first map (exact: one map of a box), flatten (entrywise), second map, relu
    assert plan.ibp_exact == (True, True, True, False, False)
    assert plan.after_nonlinear == (False, False, False, False, False)


def test_a_second_mixing_map_gets_a_backward_pass():
    """By hand: on x in [-1, 1]^2 the relu's input 2 x1 - 1 ranges over [-3, 1]; interval bounds
    give [-5, 3] (x1 + x2 and x1 - x2 each in [-2, 2]). CROWN's bounds are the exact ones, and
    the relu's upper line (z + 3) / 4 gives the output's exact maximum 1 (2.25 from [-5, 3])."""
    graph = graph_of(_two_maps(), (2,))
    lo = -torch.ones(1, 2, dtype=torch.float64)
    region = InputRegion(lo, -lo)
    b = intermediate_bounds(graph, region)
    assert b[3].lower.item() == pytest.approx(-3.0, abs=1e-12)
    assert b[3].upper.item() == pytest.approx(1.0, abs=1e-12)
    out = compute_bounds(_two_maps(), (Box(-1.0, 1.0), torch.zeros(1, 2)), "crown")
    assert out.upper.item() == pytest.approx(1.0, abs=1e-6)
    assert out.lower.item() == pytest.approx(0.0, abs=1e-6)


def _both_ways(graph, region, C):
    """The fused last step and the plain one (asking for the linear function turns it off)."""
    with torch.no_grad():
        bounds = intermediate_bounds(graph, region)
        fused = backward(graph, bounds, graph.output, C)
        plain = backward(graph, bounds, graph.output, C, linear={})
    return fused, plain


@pytest.mark.parametrize(
    ("batch", "d_in", "rows"),
    [(1, 784, 400), (6, 300, 300), (3, 20, 7)],  # chunks of rows, of examples, one product
)
@pytest.mark.parametrize("l2", [False, True])
def test_fused_last_step_equals_the_plain_one(batch, d_in, rows, l2):
    net = _mlp(d_in, rows)
    graph = graph_of(net, (d_in,))
    g = torch.Generator().manual_seed(1)
    x = torch.rand(batch, d_in, generator=g, dtype=torch.float64)
    region = InputRegion(x - 0.01, x + 0.01, x if l2 else None, 0.05 if l2 else None)
    # rows on the last hidden layer: backward through a ReLU and onto the input
    C = torch.randn(batch, rows, rows, generator=g, dtype=torch.float64)
    fused, plain = _both_ways(graph, region, C.reshape(batch, rows, rows)[..., :5])
    assert torch.allclose(fused, plain, rtol=1e-12, atol=1e-12 * float(plain.abs().max()))


def test_fused_last_step_with_rows_shared_by_the_batch():
    net = nn.Sequential(nn.Linear(30, 40), nn.Linear(40, 5)).eval()  # no relaxation in between
    graph = graph_of(net, (30,))
    x = torch.rand(4, 30, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    region = InputRegion(x - 0.1, x + 0.1)
    C = torch.eye(5, dtype=torch.float64).expand(4, 5, 5)  # stride 0 over the batch
    fused, plain = _both_ways(graph, region, C)
    assert torch.allclose(fused, plain, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_float32_fallback_is_float64_rounded_outward(kind):
    net, shape = make(kind, 3)
    x0 = torch.rand(2, *shape, generator=torch.Generator().manual_seed(3))
    region = (LpBall("inf", 0.1), x0)
    graph = graph_of(net, tuple(shape))
    assert not float32_pays(graph, 2)  # small: float32 cannot be faster here
    b32 = compute_bounds(net, region, "crown", dtype=torch.float32)
    b64 = compute_bounds(net, region, "crown")
    assert b32.lower.dtype == torch.float32  # x0's dtype, as before
    assert torch.equal(b32.lower, b64.lower) and torch.equal(b32.upper, b64.upper)


@pytest.mark.parametrize("kind", KINDS)
def test_float32_bookkeeping_without_fallback_is_sound(kind):
    """The rigorous float32 pass itself (``fallback=False``), which small networks no longer
    take by default: it contains sampled outputs and stays within 1% of float64."""
    net, shape = make(kind, 3)
    g = torch.Generator().manual_seed(3)
    x0 = torch.rand(1, *shape, generator=g)
    threat = LpBall("inf", 0.1)
    b = compute_bounds(net, (threat, x0), "crown", dtype=torch.float32, fallback=False)
    b64 = compute_bounds(net, (threat, x0), "crown")
    pts = threat.sample(x0.double(), 3000, g).reshape(-1, *shape)
    exact = make(kind, 3)[0].double()
    with torch.no_grad():
        out = exact(pts)
    assert (out >= b.lower.double()).all() and (out <= b.upper.double()).all()
    w32, w64 = (b.upper - b.lower).double(), (b64.upper - b64.lower).double()
    assert (w32 <= w64 * 1.01 + 1e-6).all()


def test_float32_pays_on_large_batches():
    net = _mlp(784, 256)
    graph = graph_of(net, (784,))
    assert float32_pays(graph, 64)
    assert not float32_pays(graph, 64, min_macs=2**40)
    lo = torch.rand(64, 784, generator=torch.Generator().manual_seed(4))
    b = compute_bounds(net, Box(lo, lo + 0.001), "ibp", dtype=torch.float32)
    assert b.lower.dtype == torch.float32


def test_float32_macs_count_the_unstable_rows_by_hand():
    graph = graph_of(_mlp(6, 8), (6,))
    # multiply-adds up to each node: 8x6, +8 (ReLU), 8x8, +8, 5x8
    upto = [0, 48, 56, 120, 128, 168]
    # node 1's interval bounds are exact (no pass); node 3: 2 rows per neuron; the output's 10
    assert float32_macs(graph, 1) == 2 * 5 * upto[5] + 2 * 8 * upto[3]
    assert float32_macs(graph, 3) == 3 * float32_macs(graph, 1)
    x = torch.rand(1, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    interval = dict(enumerate(interval_all(graph, x - 0.05, x + 0.05)))
    b = interval[3]
    k = int(((b.lower < 0) & (b.upper > 0)).sum())
    assert float32_macs(graph, 1, interval) == 2 * 5 * upto[5] + 2 * k * upto[3]


def test_float32_falls_back_where_interval_bounds_leave_few_rows():
    """oval21's case: the plan alone says float32 pays (every neuron unstable), the rows that
    interval bounds leave say it does not; the result says the computation was float64."""
    net = _mlp(784, 256)
    graph = graph_of(net, (784,))
    x = torch.rand(1, 784, generator=torch.Generator().manual_seed(5))
    wide, narrow = Box(x - 0.03, x + 0.03), Box(x - 1e-5, x + 1e-5)
    interval = dict(enumerate(interval_all(graph, x.double() - 1e-5, x.double() + 1e-5)))
    assert float32_pays(graph, 1) and not float32_pays(graph, 1, interval)
    res = compute_bounds(net, narrow, "crown", dtype=torch.float32, return_intermediate=True)
    assert res.computed_in == torch.float64
    b64 = compute_bounds(net, narrow, "crown")
    assert torch.equal(res.lower, b64.lower) and torch.equal(res.upper, b64.upper)
    res = compute_bounds(net, wide, "crown", dtype=torch.float32, return_intermediate=True)
    assert res.computed_in == torch.float32
    res = compute_bounds(
        net, narrow, "crown", dtype=torch.float32, fallback=False, return_intermediate=True
    )
    assert res.computed_in == torch.float32
    # compute_bounds' count stops its interval pass early, with the same answer as a full count
    seen = set()
    for eps in (1e-6, 1e-4, 1e-3, 3e-3, 0.01, 0.03):
        lo, hi = x.double() - eps, x.double() + eps
        early = _float32_pays(graph, input_region(Box(lo, hi)), "crown")
        assert early == float32_pays(graph, 1, dict(enumerate(interval_all(graph, lo, hi))))
        seen.add(early)
    assert seen == {True, False}


@pytest.mark.parametrize(("batch", "d_in", "rows"), [(1, 784, 400), (6, 300, 300), (3, 20, 7)])
def test_fused_last_step_equals_the_plain_one_in_float32(batch, d_in, rows):
    """The rigorous float32 pass: the same bound up to the order of its float32 sums."""
    graph = graph_of(_mlp(d_in, rows), (d_in,))
    g = torch.Generator().manual_seed(5)
    x = torch.rand(batch, d_in, generator=g)
    region = InputRegion(x - 0.01, x + 0.01)
    C = torch.randn(batch, 5, 5, generator=g)
    fused, plain = _both_ways(graph, region, C)
    assert fused.dtype == torch.float32
    scale = 1e-5 * (1 + float(plain.abs().max()))
    assert torch.allclose(fused, plain, rtol=1e-5, atol=scale)


@pytest.mark.parametrize("kind", ["mlp", "cnn", "conv-residual"])
def test_rows_shared_by_the_batch_stay_shared_with_the_same_bounds(kind):
    net, shape = make(kind, 4)
    graph = graph_of(net, tuple(shape))
    x = torch.rand(5, *shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    region = InputRegion(x - 0.05, x + 0.05)
    out = graph.nodes[graph.output].shape
    rows = torch.eye(out[0], dtype=torch.float64)[None].expand(5, -1, -1)  # stride 0
    with torch.no_grad():
        bounds = intermediate_bounds(graph, region)
        shared = two_sided(graph, bounds, graph.output, rows)
        own = two_sided(graph, bounds, graph.output, rows.contiguous())
    for a, b in ((shared.lower, own.lower), (shared.upper, own.upper)):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12 * (1 + float(b.abs().max())))


class _PoolNet(nn.Module):
    def __init__(self, kernel: int, stride: int, padding: int):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 3, 3, padding=1)
        self.pool = nn.MaxPool2d(kernel, stride, padding)

    def forward(self, x):
        return torch.relu(self.c2(self.pool(torch.relu(self.c1(x)))))


@pytest.mark.parametrize(("kernel", "stride", "padding"), [(2, 2, 0), (3, 1, 1), (3, 2, 1)])
def test_windows_through_max_pooling_equal_dense_rows(kernel, stride, padding):
    torch.manual_seed(kernel * 10 + stride)
    net = _PoolNet(kernel, stride, padding).eval()
    graph = graph_of(net, (2, 10, 10))
    x = torch.rand(3, 2, 10, 10, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    region = InputRegion(x - 0.1, x + 0.1)
    target = next(i for i, n in enumerate(graph.nodes) if n.name.startswith("c2"))
    shape = graph.nodes[target].shape
    idx = torch.arange(0, math.prod(shape), 7)
    with torch.no_grad():
        bounds = intermediate_bounds(graph, region)
        win = two_sided(graph, bounds, target, identity_windows(shape, idx, 3, x))
        dense = two_sided(graph, bounds, target, identity_rows(shape, idx, 3, x))
    for a, b in ((win.lower, dense.lower), (win.upper, dense.upper)):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12 * (1 + float(b.abs().max())))


def test_float32_falls_back_on_narrow_layers_at_any_size():
    """ACAS Xu's shape (5 inputs, 50-neuron layers): float32's bookkeeping per coefficient entry
    is not paid back by products that short (fan-in about 22), however many rows; compute_bounds
    says the computation was float64. Wide layers keep float32."""
    narrow = _mlp(5, 50)
    graph = graph_of(narrow, (5,))
    assert fan_in(graph) < FLOAT32_MIN_FAN_IN
    assert float32_pays(graph, 4096)  # enough multiply-adds: the size alone would say yes
    assert not float32_pays(graph, 4096, min_fan_in=FLOAT32_MIN_FAN_IN)
    lo = torch.rand(4096, 5, generator=torch.Generator().manual_seed(7))
    region = input_region(Box(lo, lo + 0.5))
    assert not _float32_pays(graph, region, "crown")
    wide = graph_of(_mlp(784, 256), (784,))
    assert fan_in(wide) > FLOAT32_MIN_FAN_IN
    # by hand: (5x50 + 50 + 50x50 + 50 + 50x5) / (50 + 50 + 50 + 50 + 5)
    assert fan_in(graph) == pytest.approx((250 + 50 + 2500 + 50 + 250) / 205)
