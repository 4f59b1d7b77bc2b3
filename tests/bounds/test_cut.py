"""Mixed-mode intermediate bounds (issue 14, cGAN): rows that end at a cut node's linear bounds
in the input (``crown.backward``'s ``stops``, ``crown.linear_bounds``, ``forward.substitute``),
the cut chosen by ``plan.cut_node``, and input splitting's bounds with it (``bab.bound_boxes``).
Every bound is checked against 10^4 float64 samples; the linear bounds of a cut node against
the dense backward pass at 1e-12."""

import pytest
import torch
from torch import nn

from robustlab.bounds.crown import (
    backward,
    identity_rows,
    intermediate_bounds,
    linear_bounds,
    two_sided,
)
from robustlab.bounds.forward import forward_bounds
from robustlab.bounds.graph import graph_of
from robustlab.bounds.ops.base import InputRegion
from robustlab.bounds.plan import cut_node
from robustlab.verify import bab as bab_mod
from robustlab.verify.bab import bound_boxes

N_SAMPLES = 10_000


class Gan(nn.Module):
    """A small generator (dense, transposed convolutions or upsampling, ReLU) into a small
    discriminator (strided convolutions, ReLU, a dense head), as VNN-COMP 2023's cGAN nets."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.fc = nn.Linear(4, 2 * 4 * 4)
        if kind == "upsample":
            self.up = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(2, 3, 3, padding=1))
        else:
            self.up = nn.ConvTranspose2d(2, 3, 4, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.out = nn.ConvTranspose2d(3, 1, 3, stride=1, padding=1)  # the waist: 1 x 8 x 8
        self.d1 = nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.d2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.head = nn.Linear(6 * 2 * 2, 2)

    def forward(self, z):
        h = self.fc(z).reshape(-1, 2, 4, 4)
        h = torch.relu(self.bn(self.up(h)))
        img = self.out(h)
        if self.kind == "tanh":
            img = torch.tanh(img)
        h = torch.relu(self.d1(img))
        h = torch.relu(self.d2(h))
        y = self.head(h.flatten(1))
        return torch.sigmoid(y) if self.kind == "tanh" else y


KINDS = ("transposed", "upsample", "tanh")


def _gan(kind: str) -> nn.Module:
    torch.manual_seed(KINDS.index(kind))
    net = Gan(kind)
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.2, 0.2)
        net.bn.running_var.uniform_(0.5, 1.5)
    return net.eval()


def _region(n: int = 2, width: float = 0.3, seed: int = 0) -> InputRegion:
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(n, 4, generator=g, dtype=torch.float64) * 2 - 1
    return InputRegion(x0 - width, x0 + width)


def _samples(region: InputRegion, seed: int = 1) -> torch.Tensor:
    """(N_SAMPLES, boxes, 4): uniform points of each box, its corners among them."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = region.lower, region.upper
    u = torch.rand(N_SAMPLES, *lo.shape, generator=g, dtype=torch.float64)
    u[:16] = torch.cartesian_prod(*[torch.tensor([0.0, 1.0], dtype=torch.float64)] * 4)[:, None]
    return lo + u * (hi - lo)


def _node_values(net: nn.Module, graph, x: torch.Tensor) -> dict[int, torch.Tensor]:
    """The value of every node of ``graph`` at inputs x (batch, 4), by the graph's own ops."""
    vals = {0: x}
    with torch.no_grad():
        for i, node in enumerate(graph.nodes[1:], 1):
            vals[i] = node.op.forward(*[vals[j] for j in node.inputs])
    return vals


@pytest.mark.parametrize("kind", KINDS)
def test_cut_node_is_the_generator_output(kind):
    graph = graph_of(_gan(kind), (4,))
    c = cut_node(graph)
    assert c is not None and graph.nodes[c].shape == (1, 8, 8)


def test_no_cut_without_a_waist():
    torch.manual_seed(0)
    mlp = nn.Sequential(*[m for _ in range(4) for m in (nn.Linear(8, 8), nn.ReLU())])
    mlp = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), mlp, nn.Linear(8, 3)).eval()
    assert cut_node(graph_of(mlp, (5,))) is None


@pytest.mark.parametrize("kind", KINDS)
def test_linear_bounds_are_crown_rows_and_contain_samples(kind):
    net = _gan(kind)
    graph = graph_of(net, (4,))
    region = _region()
    c = cut_node(graph)
    bounds = intermediate_bounds(graph, region, "crown")
    lin = linear_bounds(graph, bounds, c)
    # the same numbers as the dense backward pass of the identity rows, concretised
    shape = graph.nodes[c].shape
    C = identity_rows(shape, torch.arange(64), 2, region.lower)
    dense = two_sided(graph, bounds, c, C)
    mid, rad = (region.upper + region.lower) / 2, (region.upper - region.lower) / 2
    conc = lin.concrete(mid, rad)
    scale = 1 + float(dense.lower.detach().abs().max())
    assert torch.allclose(conc.lower.reshape(2, -1), dense.lower, rtol=0, atol=1e-12 * scale)
    assert torch.allclose(conc.upper.reshape(2, -1), dense.upper, rtol=0, atol=1e-12 * scale)
    # and every sampled value lies between the two lines, at its own point
    x = _samples(region)
    h = _node_values(net, graph, x.reshape(-1, 4))[c].reshape(N_SAMPLES, 2, *shape)
    lo = torch.einsum("bchwk,sbk->sbchw", lin.wl, x) + lin.bl
    hi = torch.einsum("bchwk,sbk->sbchw", lin.wu, x) + lin.bu
    tol = 1e-12 * (1 + h.abs().max())
    assert (lo <= h + tol).all() and (h <= hi + tol).all()


def test_stops_on_a_linear_prefix_change_nothing():
    """Where no relaxation lies before the stop, its linear bounds are exact: the rows that end
    there give the dense pass's bounds (substitution checked at 1e-12)."""
    net = _gan("transposed")
    graph = graph_of(net, (4,))
    region = _region()
    bounds = intermediate_bounds(graph, region, "crown")
    s = next(i for i, n in enumerate(graph.nodes) if n.shape == (3, 8, 8))  # the first map
    lin = linear_bounds(graph, bounds, s)
    out = graph.output
    C = torch.randn(2, 3, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    plain = backward(graph, bounds, out, C)
    stopped = backward(graph, bounds, out, C, stops={s: lin})
    assert torch.allclose(
        stopped, plain, rtol=0, atol=1e-12 * (1 + float(plain.detach().abs().max()))
    )


@pytest.mark.parametrize("kind", KINDS)
def test_mixed_bounds_contain_samples(kind):
    net = _gan(kind)
    graph = graph_of(net, (4,))
    region = _region(n=3, width=0.5, seed=2)
    c = cut_node(graph)
    prior = forward_bounds(graph, region)
    bounds = intermediate_bounds(graph, region, "crown", prior=prior, cut=c)
    x = _samples(region, seed=3)
    vals = _node_values(net, graph, x.reshape(-1, 4))
    for i, b in bounds.items():
        v = vals[i].reshape(N_SAMPLES, *b.lower.shape)
        tol = 1e-12 * (1 + v.abs().max())
        assert (b.lower - tol <= v).all() and (v <= b.upper + tol).all(), i
    # the final rows, ending at the cut and going on to the input
    C = torch.tensor([[1.0, -1.0], [-1.0, 0.5]], dtype=torch.float64).expand(3, 2, 2)
    y = torch.einsum("rj,sbj->sbr", C[0], vals[graph.output].reshape(N_SAMPLES, 3, 2))
    for stops in (None, {c: linear_bounds(graph, bounds, c)}):
        lb = backward(graph, bounds, graph.output, C, stops=stops)
        assert (lb <= y.amin(0) + 1e-12 * (1 + y.abs().max())).all()


@pytest.mark.parametrize("kind", KINDS)
def test_bound_boxes_with_a_cut_are_sound_and_tighter_than_forward(kind, monkeypatch):
    net = _gan(kind)
    graph = graph_of(net, (4,))
    region = _region(n=4, width=0.6, seed=5)
    C = torch.tensor([[1.0, -1.0], [0.0, 1.0]], dtype=torch.float64)
    lb, A, bias = bound_boxes(graph, region.lower, region.upper, C, (4,), "forward")
    x = _samples(region, seed=6)
    y = _node_values(net, graph, x.reshape(-1, 4))[graph.output].reshape(N_SAMPLES, 4, 2)
    cy = torch.einsum("rj,sbj->sbr", C, y)
    tol = 1e-12 * (1 + cy.abs().max())
    assert (lb <= cy.amin(0) + tol).all()
    # the linear lower bounds hold at every sample too
    lin = torch.einsum("brk,sbk->sbr", A, x) + bias
    assert (lin <= cy + tol).all()
    monkeypatch.setattr(bab_mod, "cut_node", lambda g: None)
    lb_fwd, _, _ = bound_boxes(graph, region.lower, region.upper, C, (4,), "forward")
    assert (lb >= lb_fwd - tol).all() and (lb > lb_fwd + 1e-9).any()


def test_search_starts_from_the_margin_pass(monkeypatch):
    """search_steps takes the root box's bounds from hold_margin's pass on the same graph (one
    bound pass fewer) and answers as when it bounds the root itself."""
    from robustlab.verify.root import RootCache
    from robustlab.verify.spec import Disjunct, Property

    net = _gan("transposed")
    graph = graph_of(net, (4,))
    region = _region(n=1, width=0.05, seed=7)
    with torch.no_grad():
        y0 = net(((region.lower + region.upper) / 2).float())[0].double()
    # y_0 stays within 1 of its centre value: a property that holds
    prop = Property(
        region.lower[0],
        region.upper[0],
        (
            Disjunct(torch.tensor([[1.0, 0.0]], dtype=torch.float64), y0[:1] - 1),
            Disjunct(torch.tensor([[-1.0, 0.0]], dtype=torch.float64), -y0[:1] - 1),
        ),
    )
    calls = []
    real = bab_mod.bound_boxes
    monkeypatch.setattr(bab_mod, "bound_boxes", lambda *a, **k: calls.append(1) or real(*a, **k))
    cache = RootCache(graph)  # the last one-box pass is kept there
    margin = bab_mod.hold_margin(graph, prop, (4,), intermediate="forward", cache=cache)
    steps = bab_mod.search_steps(
        graph, prop, (4,), net, intermediate="forward", margin=margin, reuse_parent=False,
        cache=cache,
    )  # fmt: skip
    verdict = bab_mod.portfolio([steps], float("inf"))
    assert verdict == ("holds", None) and len(calls) == 1
