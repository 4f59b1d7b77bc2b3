"""Dense rows (rows.py): identity rows taken through a node's own dense layer are that layer's
weight rows, so ``refine`` starts its passes one step back; the bounds are those of the full
identity rows (float64 to rounding), float32 ones stay sound, and the bias is added outward."""

import copy
import math

import pytest
import torch
from torch import nn

from robustlab.bounds import crown, intermediate, rounding
from robustlab.bounds.backward import backward, two_sided
from robustlab.bounds.graph import Bounds, graph_of
from robustlab.bounds.intermediate import intermediate_bounds, refine
from robustlab.bounds.ops.base import InputRegion
from robustlab.bounds.rows import Stepped, identity_rows, stepped

from .nets import make


def _mlp(seed: int = 3, width: int = 24) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(8, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, 3),
    ).eval()


def _region(batch: int, dtype=torch.float64, eps: float = 0.3) -> InputRegion:
    x = torch.rand(batch, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return InputRegion((x - eps).to(dtype), (x + eps).to(dtype))


def test_stepped_rows_are_the_weight_rows():
    net = _mlp()
    graph = graph_of(net, (8,))
    i = next(
        k
        for k, n in enumerate(graph.nodes)
        if k > 1 and n.shape == (24,) and hasattr(n.op, "weight")
    )
    like = torch.zeros(2, 24, dtype=torch.float64)
    W, b = graph.nodes[i].op.weight.double(), graph.nodes[i].op.bias.double()
    idx = torch.tensor([5, 0, 17])
    step = stepped(graph, i, idx, 2, like)
    assert step.j == graph.nodes[i].inputs[0]
    assert torch.equal(step.C, W[idx][None].expand(2, -1, -1))
    assert torch.equal(step.bias, b[idx][None])
    per = torch.tensor([[1, 2], [3, 4]])
    step = stepped(graph, i, per, 2, like)
    assert torch.equal(step.C, W[per]) and torch.equal(step.bias, b[per])
    # float64 weights in a float32 pass would be rounded: no step
    assert stepped(graph, i, idx, 2, like.float()) is not None
    op = graph.nodes[i].op
    weight = op.weight
    try:
        op.weight = weight.double()
        assert stepped(graph, i, idx, 2, like.float()) is None
    finally:
        op.weight = weight
    # the rows end at node j when the pass stops there
    assert stepped(graph, i, idx, 2, like, stops={step.j: None}) is None


@pytest.mark.parametrize("batch", [1, 5])
def test_refined_bounds_equal_identity_rows_float64(batch):
    """The passes from W's rows give the bounds of the identity rows' passes (float64)."""
    graph = graph_of(_mlp(), (8,))
    region = _region(batch)
    with torch.no_grad():
        bounds = intermediate_bounds(graph, region, intersect=False)
        for i in graph.plan.needs:
            if graph.plan.ibp_exact[i] or i == graph.output:
                continue
            prior = {j: bounds[j] for j in range(i)}
            shape = graph.nodes[i].shape
            C = identity_rows(shape, torch.arange(math.prod(shape)), batch, region.lower)
            full = two_sided(graph, prior, i, C)
            node = graph.nodes[i]
            ibp = node.op.ibp(*[bounds[j] for j in node.inputs])
            mask = (ibp.lower < 0) & (ibp.upper > 0)  # the rows refine computes
            assert bool(mask.any())
            scale = full.upper.abs().max() + full.lower.abs().max()
            for got, want in ((bounds[i].lower, full.lower), (bounds[i].upper, full.upper)):
                assert torch.allclose(got[mask], want[mask], rtol=0, atol=1e-12 * float(scale))


def test_float32_refined_bounds_contain_samples():
    """float32 passes from W's rows (the bias added outward) contain float64 outputs."""
    net = _mlp(seed=5, width=40)
    graph = graph_of(net, (8,))
    region = _region(3, torch.float32, eps=0.05)
    with torch.no_grad():
        bounds = intermediate_bounds(graph, region)
        g = torch.Generator().manual_seed(0)
        lo, hi = region.lower.double(), region.upper.double()
        x = lo + (hi - lo) * torch.rand(400, *lo.shape, generator=g, dtype=torch.float64)
        h = x.reshape(-1, 8)
        seen = {}
        for k, layer in enumerate(net.double(), 1):
            h = layer(h)
            seen[k] = h.reshape(400, 3, -1)
    for i in graph.plan.needs:
        if i in seen and i != graph.output:
            assert bool((seen[i] >= bounds[i].lower.double()).all())
            assert bool((seen[i] <= bounds[i].upper.double()).all())


def test_bias_added_outward_in_float32():
    """A float32 bound plus a bias whose float64 sum rounds up is still below the exact sum."""
    tiny = torch.tensor([[1e-30]], dtype=torch.float32)
    step = Stepped(1, torch.zeros(1, 1, 1), torch.tensor([[1.0]], dtype=torch.float32))
    b = step.add(Bounds(tiny, -tiny))
    assert rounding.tracked(b.lower)
    assert float(b.lower) < 1.0 and float(b.upper) > 1.0  # the exact 1 +- 1e-30 inside
    assert float(b.lower) == float(torch.nextafter(torch.tensor(1.0), torch.tensor(0.0)))


def test_float32_rows_far_from_zero_stay_tight():
    """Dense rows' value at the target's reference is summed in float64, less its float64
    rounding bound (``Tracker._at_target``): on a narrow region far from 0 the float32 bound
    stays within float32 rounding of the region's width, not of the values' magnitude."""
    torch.manual_seed(6)
    net = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 3)).eval()
    graph = graph_of(net, (8,))
    x = 1000 + torch.rand(2, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out = rounding.outward(Bounds(x - 1e-4, x + 1e-4), torch.float32)
    region32 = InputRegion(out.lower, out.upper)
    region64 = InputRegion(out.lower.double(), out.upper.double())  # the same box
    j = 2  # the ReLU's output: rows end there, the reference is the ReLU of ~1000-sized values
    C = torch.randn(2, 5, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        bounds64 = intermediate_bounds(graph, region64)
        bounds32 = intermediate_bounds(graph, region32)
        lb64 = backward(graph, bounds64, j, C.double())
        lb32 = backward(graph, bounds32, j, C)
        h = torch.relu(x @ net[0].weight.double().T + net[0].bias.double())
    value = (C.double() * h[:, None]).sum(-1)
    assert bool((lb32.double() <= value).all()) and bool((lb64 <= value + 1e-9).all())
    # a few float32 ulps of the bound itself (its final rounding), not gamma_64 of ~1e3 values
    ulps = 4 * torch.finfo(torch.float32).eps * lb64.abs()
    assert bool((lb64 - lb32.double() <= ulps).all())


@pytest.mark.parametrize("kind", ["mlp", "cnn", "conv-residual"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_upper_rows_first_give_the_same_final_bounds(kind, dtype):
    """``refine(split_min=0)``: upper rows first, lower rows only for neurons not proven dead;
    the final bounds are those of one two-sided pass (float64 to 1e-12, float32 within its
    rounding), and no lower row is computed for a neuron every example has dead."""
    net, shape = make(kind, 5)
    graph = graph_of(net, tuple(shape))
    x = torch.rand(3, *shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    region = InputRegion(x - 0.3, x + 0.3)
    if dtype == torch.float32:
        out = rounding.outward(region, torch.float32)
        region = InputRegion(out.lower, out.upper)
    finals, seen = [], []
    for split_min in (2**62, 0):
        bounds: dict = {0: region}
        with torch.no_grad():
            for i, node in enumerate(graph.nodes[1:], 1):
                bounds[i] = rounding.safe_ibp(node.op, *[bounds[j] for j in node.inputs])
                need = graph.plan.needs.get(i)
                if need is not None and not graph.plan.ibp_exact[i] and i != graph.output:
                    # the padded rows shared by the batch (ragged rows skip no dead neuron)
                    bounds[i] = refine(graph, bounds, i, need, split_min=split_min, ragged=0.0)
            n = math.prod(graph.nodes[graph.output].shape)
            C = identity_rows(graph.nodes[graph.output].shape, torch.arange(n), 3, region.lower)
            finals.append(two_sided(graph, bounds, graph.output, C))
        seen.append(bounds)
    one, split = finals
    scale = float(one.upper.abs().max() + one.lower.abs().max())
    tol = (1e-12 if dtype == torch.float64 else 1e-5) * scale
    assert torch.allclose(split.lower.double(), one.lower.double(), rtol=0, atol=tol)
    assert torch.allclose(split.upper.double(), one.upper.double(), rtol=0, atol=tol)
    skipped = sum(int((seen[0][i].lower != seen[1][i].lower).sum()) for i in seen[0])
    assert skipped > 0 or kind == "conv-residual"  # dead neurons kept their interval bounds
    for i in seen[0]:  # upper bounds as before; lower ones as before wherever the neuron lives
        a, b = seen[0][i], seen[1][i]
        assert torch.allclose(b.upper.double(), a.upper.double(), rtol=0, atol=tol)
        live = b.upper > 0
        assert torch.allclose(b.lower[live].double(), a.lower[live].double(), rtol=0, atol=tol)


def _spread_region(kind: str, batch: int) -> tuple[nn.Module, object, InputRegion]:
    """Examples of widths 1e-3 to 0.5: each has its own unstable neurons."""
    net, shape = make(kind, 7) if kind != "deep" else (_mlp(seed=7), (8,))
    g = torch.Generator().manual_seed(8)
    x = torch.rand(batch, *shape, generator=g, dtype=torch.float64)
    eps = (10 ** torch.linspace(-3, math.log10(0.5), batch, dtype=torch.float64)).reshape(
        batch, *[1] * len(shape)
    )
    return net, graph_of(net, tuple(shape)), InputRegion(x - eps, x + eps)


@pytest.mark.parametrize("kind", ["mlp", "deep"])
def test_ragged_rows_give_each_example_its_own_bounds(kind, monkeypatch):
    """``refine``'s ragged rows (one row per example and unstable neuron, all in one batch):
    every example's bounds are those of a pass over that example alone (float64, to
    rounding). (The padded rows also tighten some neurons that are not unstable, as a side
    effect that depends on the batch, and CROWN is not monotone in intermediate bounds: their
    results differ either way, by more than rounding.)"""
    batch = 12
    net, graph, region = _spread_region(kind, batch)
    calls = []
    ragged = intermediate._refine_ragged
    monkeypatch.setattr(intermediate, "_refine_ragged", lambda *a: calls.append(1) or ragged(*a))
    with torch.no_grad():
        got = intermediate_bounds(graph, region)
        assert calls, "the ragged rows were not taken"
        for e in range(batch):
            one = InputRegion(region.lower[e : e + 1], region.upper[e : e + 1])
            want = intermediate_bounds(graph, one)
            for i, b in want.items():
                scale = 1.0 + float(b.upper.abs().max() + b.lower.abs().max())
                for x, y in (
                    (got[i].lower[e : e + 1], b.lower),
                    (got[i].upper[e : e + 1], b.upper),
                ):
                    assert torch.allclose(x, y, rtol=0, atol=1e-12 * scale), (e, i)


def test_ragged_rows_contain_samples_on_many_boxes(monkeypatch):
    """Many small boxes of a narrow ReLU network (ACAS Xu's shape, in small): the ragged
    rows' bounds of every node contain its sampled values."""
    torch.manual_seed(11)
    net = nn.Sequential(
        nn.Linear(5, 20),
        nn.ReLU(),
        nn.Linear(20, 20),
        nn.ReLU(),
        nn.Linear(20, 20),
        nn.ReLU(),
        nn.Linear(20, 5),
    ).eval()
    graph = graph_of(net, (5,))
    g = torch.Generator().manual_seed(12)
    batch = 200
    c = torch.rand(batch, 5, generator=g, dtype=torch.float64)
    w = 10 ** (-3 * torch.rand(batch, 1, generator=g, dtype=torch.float64))
    region = InputRegion(c - w, c + w)
    calls = []
    ragged = intermediate._refine_ragged
    monkeypatch.setattr(intermediate, "_refine_ragged", lambda *a: calls.append(1) or ragged(*a))
    with torch.no_grad():
        bounds = intermediate_bounds(graph, region)
        assert calls
        x = c + w * (2 * torch.rand(300, batch, 5, generator=g, dtype=torch.float64) - 1)
        h = x
        for k, layer in enumerate(copy.deepcopy(net).double(), 1):
            h = layer(h)
            assert bool((h >= bounds[k].lower - 1e-12).all()), k
            assert bool((h <= bounds[k].upper + 1e-12).all()), k


def test_union_rows_less_dead_neurons_give_the_same_bounds(monkeypatch):
    """Examples sharing most unstable neurons (the union's rows): the rows of neurons dead in
    their example are dropped (ragged rows), and every bound a later step reads is as before:
    the live neurons' bounds and the output's (float64, to rounding)."""
    net = _mlp(seed=9, width=32)
    graph = graph_of(net, (8,))
    x = torch.rand(1, 8, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    g = torch.Generator().manual_seed(11)
    shift = torch.rand(16, 8, generator=g, dtype=torch.float64)
    region = InputRegion(x + shift - 0.1, x + shift + 0.1)
    calls = []
    ragged = intermediate._refine_ragged
    monkeypatch.setattr(intermediate, "_refine_ragged", lambda *a: calls.append(1) or ragged(*a))
    with torch.no_grad():
        got, got_b = crown.crown(graph, region)
        assert calls
        monkeypatch.setattr(intermediate, "refine", lambda *a, **k: refine(*a, **k, ragged=0.0))
        want, want_b = crown.crown(graph, region)
    for i, b in want_b.items():
        live = got_b[i].upper > 0  # not dead by the bounds before the rows
        scale = 1e-12 * (1.0 + float(b.upper.abs().max() + b.lower.abs().max()))
        assert torch.allclose(got_b[i].upper[live], b.upper[live], rtol=0, atol=scale)
        assert torch.allclose(got_b[i].lower[live], b.lower[live], rtol=0, atol=scale)
        assert bool((b.upper[~live] <= 0).all())  # dead either way, read as 0 by the ReLU
    scale = 1e-12 * (1.0 + float(want.upper.abs().max() + want.lower.abs().max()))
    assert torch.allclose(got.lower, want.lower, rtol=0, atol=scale)
    assert torch.allclose(got.upper, want.upper, rtol=0, atol=scale)
