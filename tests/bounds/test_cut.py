"""Mixed-mode intermediate bounds (issue 14, cGAN): rows that end at a cut node's linear bounds
in the input (``backward.backward``'s ``stops``, ``cut.linear_bounds``, ``forward.substitute``),
the cut chosen by ``plan.cut_node``, and input splitting's bounds with it (``bab.bound_boxes``).
Every bound is checked against 10^4 float64 samples; the linear bounds of a cut node against
the dense backward pass at 1e-12."""

import pytest
import torch
from torch import nn

from robustlab.bounds import cut as cut_mod
from robustlab.bounds.backward import backward, two_sided
from robustlab.bounds.cut import Cut, CutPasses, convolutional, linear_bounds, mixed_bounds
from robustlab.bounds.forward import Lin, forward_bounds
from robustlab.bounds.graph import graph_of
from robustlab.bounds.intermediate import intermediate_bounds
from robustlab.bounds.ops.base import InputRegion
from robustlab.bounds.plan import cut_node
from robustlab.bounds.rows import identity_rows
from robustlab.bounds.tracker import covers
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
    bounds = intermediate_bounds(graph, region, "crown", prior=prior, cut=Cut(c))
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


def _far(net: nn.Module) -> nn.Module:
    """The net with its first layer's bias shifted so that inputs near 1000 give the values
    inputs near 0 gave: float32 rounding of the inputs then exceeds a box of width 1e-3."""
    with torch.no_grad():
        net.fc.bias -= 1000.0 * net.fc.weight.sum(1)
    return net


def _far_region(n: int = 2, seed: int = 0) -> InputRegion:
    g = torch.Generator().manual_seed(seed)
    x0 = 1000.0 + torch.rand(n, 4, generator=g, dtype=torch.float64)
    return InputRegion(x0, x0 + 1e-3)


def _contained(lin, net, graph, region, c, seed=1) -> None:
    """Every sample's value of node c lies between its lines (float64, 1e-10: far below the
    float32 rounding the lines bound, ~1e-5 here)."""
    n = region.lower.shape[0]
    shape = graph.nodes[c].shape
    x = _samples(region, seed)
    h = _node_values(net, graph, x.reshape(-1, 4))[c].reshape(N_SAMPLES, n, *shape)
    lo = torch.einsum("b...k,sbk->sb...", lin.wl.double(), x) + lin.bl
    hi = torch.einsum("b...k,sbk->sb...", lin.wu.double(), x) + lin.bu
    tol = 1e-10 * (1 + h.detach().abs().max())
    assert (lo <= h + tol).all() and (h <= hi + tol).all()


def _lines32(graph, region: InputRegion, c: int):
    """The cut's lines in the rigorous float32 mode (the box rounded outward, float32 CROWN
    bounds up to the cut), as ``intermediate_bounds(cut=Cut(c, float32=True))`` computes them."""
    box = cut_mod._outward_region(region)
    bounds = intermediate_bounds(graph, box, "crown")
    return linear_bounds(graph, bounds, c), box


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("far", [False, True])
def test_float32_lines_contain_samples_and_are_never_tighter_than_float64(kind, far):
    """float32 lines: W float32, intercepts float64 carrying the pass's rounding bound; they
    hold at 10^4 float64 samples also where rounding exceeds the box (inputs near 1000, width
    1e-3); concretised, never tighter than the float64 lines by more than float32 rounding of
    the values (~1e-6 of their magnitude; the rounding bound itself is larger), and where
    rounding is small (inputs near 0) only slightly looser."""
    net = _far(_gan(kind)) if far else _gan(kind)
    graph = graph_of(net, (4,))
    assert covers(graph)
    region = _far_region() if far else _region()
    c = cut_node(graph)
    lin32, box = _lines32(graph, region, c)
    assert lin32.wl.dtype == torch.float32 and lin32.bl.dtype == torch.float64
    _contained(lin32, net, graph, region, c)
    lin64 = linear_bounds(graph, intermediate_bounds(graph, region, "crown"), c)
    mid, rad = (region.upper + region.lower) / 2, (region.upper - region.lower) / 2
    b32 = cut_mod._upcast_lin(lin32).concrete(mid, rad)
    b64 = lin64.concrete(mid, rad)
    mag = 1 + torch.maximum(b64.lower.abs(), b64.upper.abs())
    assert (b32.lower <= b64.lower + 1e-6 * mag).all()
    assert (b32.upper >= b64.upper - 1e-6 * mag).all()
    if not far:
        width = b64.upper - b64.lower
        assert (b64.lower - b32.lower <= 1e-3 * width + 1e-5).all()
        assert (b32.upper - b64.upper <= 1e-3 * width + 1e-5).all()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("far", [False, True])
def test_mixed_bounds_with_float32_lines_contain_samples(kind, far):
    net = _far(_gan(kind)) if far else _gan(kind)
    graph = graph_of(net, (4,))
    region = _far_region(3, seed=2) if far else _region(n=3, width=0.5, seed=2)
    c = cut_node(graph)
    prior = forward_bounds(graph, region)
    bounds = intermediate_bounds(graph, region, "crown", prior=prior, cut=Cut(c, float32=True))
    assert all(b.lower.dtype == torch.float64 for b in bounds.values())
    x = _samples(region, seed=3)
    vals = _node_values(net, graph, x.reshape(-1, 4))
    for i, b in bounds.items():
        v = vals[i].reshape(N_SAMPLES, *b.lower.shape)
        tol = 1e-10 * (1 + v.detach().abs().max())
        assert (b.lower - tol <= v).all() and (v <= b.upper + tol).all(), i


@pytest.mark.parametrize("kind", KINDS)
def test_bound_boxes_with_float32_lines_are_sound_and_close(kind, monkeypatch):
    """bound_boxes' cut branch with the float32 prefix (``plan.float32_pays`` forced): its
    bounds and linear lower bounds hold at every sample and lose little to float64's."""
    net = _gan(kind)
    graph = graph_of(net, (4,))
    region = _region(n=4, width=0.6, seed=5)
    C = torch.tensor([[1.0, -1.0], [0.0, 1.0]], dtype=torch.float64)
    lb64, _, _ = bound_boxes(graph, region.lower, region.upper, C, (4,), "forward")
    monkeypatch.setattr(bab_mod, "float32_pays", lambda g, n: True)
    lb, A, bias = bound_boxes(graph, region.lower, region.upper, C, (4,), "forward")
    x = _samples(region, seed=6)
    y = _node_values(net, graph, x.reshape(-1, 4))[graph.output].reshape(N_SAMPLES, 4, 2)
    cy = torch.einsum("rj,sbj->sbr", C, y)
    tol = 1e-10 * (1 + cy.detach().abs().max())
    assert (lb <= cy.amin(0) + tol).all()
    assert (torch.einsum("brk,sbk->sbr", A, x) + bias <= cy + tol).all()
    assert (lb <= lb64 + 1e-6 * (1 + lb64.abs())).all()
    assert (lb >= lb64 - 1e-3 * (1 + lb64.abs())).all()


def _relu_after(graph) -> int:
    """The first convolution of the discriminator: a node read only by a ReLU."""
    return next(
        i
        for i, n in enumerate(graph.nodes)
        if n.shape == (4, 4, 4) and type(graph.nodes[i + 1].op).__name__ == "ReLU"
    )


@pytest.mark.parametrize("float32", [False, True])
def test_dead_neurons_get_interval_lines_and_change_no_later_bound(float32, monkeypatch):
    """A node read only by a ReLU: neurons with upper <= 0 get the constant lines of their
    interval bounds (no rows), those the upper lines show dead no lower rows; every line holds
    at the samples, the live neurons' lines are the dense CROWN rows (1e-12), and mixed-mode
    bounds of every later node, and the final bound, are those without the skip."""
    net = _gan("transposed")
    with torch.no_grad():  # most neurons of the discriminator's first map dead, some not
        net.d1.bias -= torch.tensor([0.15, 0.35, 0.5, 0.2])
    graph = graph_of(net, (4,))
    region = _region(n=2, width=0.5, seed=4)
    s = _relu_after(graph)
    if float32:
        lin, box = _lines32(graph, region, s)
        _contained(lin, net, graph, region, s)
        return
    bounds = intermediate_bounds(graph, region, "crown")
    lin = linear_bounds(graph, bounds, s)
    _contained(lin, net, graph, region, s)
    const = (lin.wl == 0).all(-1) & (lin.wu == 0).all(-1)
    assert bool(const.any()) and not bool(const.all())
    mid, rad = (region.upper + region.lower) / 2, (region.upper - region.lower) / 2
    conc = lin.concrete(mid, rad)
    dense = two_sided(
        graph, bounds, s, identity_rows(graph.nodes[s].shape, torch.arange(64), 2, region.lower)
    )
    live = (conc.upper > 0).reshape(2, -1)
    scale = 1e-12 * (1 + float(dense.lower.detach().abs().max()))
    assert torch.allclose(conc.lower.reshape(2, -1)[live], dense.lower[live], atol=scale, rtol=0)
    assert torch.allclose(conc.upper.reshape(2, -1)[live], dense.upper[live], atol=scale, rtol=0)
    # mixed mode with the cut there, with and without the skip
    prior = forward_bounds(graph, region)
    C = torch.tensor([[1.0, -1.0], [-1.0, 0.5]], dtype=torch.float64).expand(2, 2, 2)
    skip = intermediate_bounds(graph, region, "crown", prior=prior, cut=Cut(s))
    lb = backward(graph, skip, graph.output, C, stops={s: linear_bounds(graph, skip, s)})
    monkeypatch.setattr(cut_mod, "_zero_when_dead", lambda g, s: False)
    full = intermediate_bounds(graph, region, "crown", prior=prior, cut=Cut(s))
    lb_full = backward(graph, full, graph.output, C, stops={s: linear_bounds(graph, full, s)})
    for j in range(s + 1, len(graph.nodes)):
        tol = 1e-12 * (1 + float(full[j].upper.detach().abs().max()))
        assert torch.allclose(skip[j].lower, full[j].lower, atol=tol, rtol=0), j
        assert torch.allclose(skip[j].upper, full[j].upper, atol=tol, rtol=0), j
    assert torch.allclose(lb, lb_full, atol=1e-12 * (1 + float(lb.detach().abs().max())), rtol=0)


def _halves(region: InputRegion, inputs=(0, 1)) -> InputRegion:
    """Each box halved along each of ``inputs``: two boxes per input, inside their box."""
    lo, hi = region.lower, region.upper
    mid = (lo + hi) / 2
    los, his = [], []
    for j in inputs:
        h1, l2 = hi.clone(), lo.clone()
        h1[:, j], l2[:, j] = mid[:, j], mid[:, j]
        los += [lo, l2]
        his += [h1, hi]
    return InputRegion(torch.cat(los), torch.cat(his))


def test_kept_passes_are_found_for_boxes_inside_within_the_levels():
    graph = graph_of(_gan("transposed"), (4,))
    kept = CutPasses(levels=2)
    lo, hi = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    w, b = torch.zeros(1, 1, 8, 8, 4), torch.zeros(1, 1, 8, 8)
    one = Lin(w, b, w, b)
    kept.put(graph, lo, hi, one, {})
    kept.put(graph, lo, hi / 2, one, {})  # a smaller kept box inside the first
    boxes_lo = torch.tensor([[0.0, 0, 0, 0], [0.0, 0, 0, 0], [0.5, 0, 0, 0], [0.0, 0, 0, 0]])
    boxes_hi = torch.tensor(
        [[0.5, 0.5, 0.5, 0.5], [0.5, 1, 1, 1], [1.0, 1, 1, 1], [1.0, 1, 1, 1.5]]
    )
    found = kept.find(graph, boxes_lo.double(), boxes_hi.double())
    assert found[0] is not None and bool((found[0].hi == 0.5).all())  # the smallest holding it
    assert found[1] is not None and bool((found[1].hi == 1).all())
    assert found[2] is not None  # one halving
    assert found[3] is None  # not inside
    deep = kept.find(graph, torch.zeros(1, 4).double(), torch.full((1, 4), 0.05).double())
    assert deep == [None]  # many halvings below every kept box
    other = graph_of(_gan("transposed"), (4,))
    assert kept.find(other, boxes_lo.double(), boxes_hi.double()) == [None] * 4
    small = CutPasses(max_entries=2 * one.wl.numel() + 2 * one.bl.numel())
    for _ in range(3):
        small.put(graph, lo, hi, one, {})
    assert len(small._items) == 1  # least recently stored out first


@pytest.mark.parametrize(
    ("kind", "float32"),
    [("transposed", False), ("transposed", True), ("upsample", True), ("tanh", True)],
)
def test_boxes_inside_a_kept_box_take_its_pass_and_stay_sound(kind, float32, monkeypatch):
    """mixed_bounds on 4 boxes inside each of 2 kept boxes, and 2 boxes outside them in the
    same batch: only those 2 compute lines (one pass), every node's bounds contain 10^4 samples
    of each box, and bound_boxes' final rows (through the kept bounds) hold at every sample."""
    net = _gan(kind)
    graph = graph_of(net, (4,))
    region = _region(n=2, width=0.4, seed=8)
    c = cut_node(graph)
    kept = CutPasses()
    mixed_bounds(graph, region, forward_bounds(graph, region), None, c, float32, kept)
    assert len(kept._items) == 2
    inner = _halves(region)
    far = _region(n=2, width=0.4, seed=9)  # outside both: passes of their own
    boxes = InputRegion(torch.cat([inner.lower, far.lower]), torch.cat([inner.upper, far.upper]))
    calls = []
    real = cut_mod.linear_bounds
    monkeypatch.setattr(cut_mod, "linear_bounds", lambda *a, **k: calls.append(1) or real(*a))
    bounds = mixed_bounds(graph, boxes, forward_bounds(graph, boxes), None, c, float32, kept)
    assert len(calls) == 1 and len(kept._items) == 4  # the two outside boxes only, one pass
    x = torch.cat([_samples(inner, seed=10), _samples(far, seed=11)], 1)
    vals = _node_values(net, graph, x.reshape(-1, 4))
    for i, b in bounds.items():
        v = vals[i].reshape(N_SAMPLES, *b.lower.shape)
        tol = 1e-10 * (1 + v.detach().abs().max())
        assert (b.lower - tol <= v).all() and (v <= b.upper + tol).all(), i
    monkeypatch.setattr(bab_mod, "float32_pays", lambda g, n: float32)
    C = torch.tensor([[1.0, -1.0], [0.0, 1.0]], dtype=torch.float64)
    lb, A, bias = bound_boxes(graph, boxes.lower, boxes.upper, C, (4,), "forward", passes=kept)
    y = torch.einsum("rj,sbj->sbr", C, vals[graph.output].reshape(N_SAMPLES, -1, 2))
    tol = 1e-10 * (1 + y.detach().abs().max())
    assert (lb <= y.amin(0) + tol).all()
    assert (torch.einsum("brk,sbk->sbr", A, x) + bias <= y + tol).all()


def test_float32_and_kept_passes_only_on_convolutional_nets():
    """bab.bound_boxes takes the float32 cut pass and kept passes on convolutional graphs
    (cGAN) only: not on dense nets with a waist (TLL), whose cut passes are cheap."""
    assert all(convolutional(graph_of(_gan(kind), (4,))) for kind in KINDS)
    torch.manual_seed(0)
    waist = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3), nn.Linear(3, 8))
    mlp = nn.Sequential(waist, nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1)).eval()
    assert not convolutional(graph_of(mlp, (4,)))
