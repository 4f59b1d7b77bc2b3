"""Input-splitting branch and bound: children reuse their parent's intermediate bounds (sound on
samples, never looser), and verdicts agree with dense sampling on small ReLU networks."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from robustlab.bounds.graph import graph_of
from robustlab.verify import bab, embed, root
from robustlab.verify.spec import Disjunct, Property

from .small_nets import box_sample, relu_mlp, threshold_property


@pytest.mark.parametrize("seed", range(4))
def test_parent_bounds_are_sound_and_never_looser(seed):
    net = relu_mlp(seed, 4)
    g = graph_of(net, (4,))
    C = torch.tensor([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]], dtype=torch.float64)
    lo, hi = -torch.ones(1, 4, dtype=torch.float64), torch.ones(1, 4, dtype=torch.float64)
    kept: list = []
    bab.bound_boxes(g, lo, hi, C, (4,), keep=kept)
    # the parent's four children along inputs 0 and 1
    L = torch.tensor([[-1, -1, -1, -1], [0, -1, -1, -1], [-1, 0, -1, -1], [0, 0, -1, -1]])
    L = L.double()
    H = L + torch.tensor([1.0, 1.0, 2.0, 2.0], dtype=torch.float64)
    plain = bab.bound_boxes(g, L, H, C, (4,))[0]
    kept_children: list = []
    with_parent = bab.bound_boxes(
        g, L, H, C, (4,), parent=kept[0].repeat(4, 1, 1), keep=kept_children
    )
    assert (with_parent[0] >= plain - 1e-12).all()
    assert kept_children[0].shape == (4, *kept[0].shape[1:])
    for b in range(4):
        x = box_sample(L[b], H[b], 4000, seed)
        with torch.no_grad():
            y = copy.deepcopy(net).double()(x) @ C.T
        assert (y >= with_parent[0][b] - 1e-9).all()


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("factor", [0.97, 1.03])
def test_input_split_verdicts_agree_with_sampling(seed, factor):
    """Y_0 >= t unsafe, t just below or above the sampled maximum over the box."""
    n_in = 2 + seed % 2
    net = relu_mlp(seed, n_in)
    g = graph_of(net, (n_in,))
    lo, hi = -torch.ones(n_in, dtype=torch.float64), torch.ones(n_in, dtype=torch.float64)
    x = box_sample(lo, hi, 20000, seed)
    with torch.no_grad():
        top = float(copy.deepcopy(net).double()(x)[:, 0].max())
    t = top * factor if top > 0 else top / factor
    prop = Property(lo, hi, (Disjunct(torch.tensor([[-1.0, 0.0, 0.0]]), torch.tensor([-t])),))
    verdict, z = bab.input_split(g, prop, (n_in,), net, deadline=torch.inf, batch=64)
    if t <= top:  # a sampled point reaches it
        assert verdict == "violated"
    if verdict == "violated":
        with torch.no_grad():
            assert float(net(z.reshape(1, -1).float())[0, 0]) >= t - 1e-5
    else:
        assert verdict == "holds" and top < t


def test_large_networks_keep_no_parent_bounds(monkeypatch):
    """Past PARENT_BOUNDS_MAX neurons a box keeps nothing for its children (memory), and the
    search still answers."""
    monkeypatch.setattr(bab, "PARENT_BOUNDS_MAX", 10)
    net = relu_mlp(0, 2)
    g = graph_of(net, (2,))
    lo, hi = -torch.ones(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    kept: list = []
    C = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    bab.bound_boxes(g, lo[None], hi[None], C, (2,), keep=kept)
    assert kept[0].shape == (1, 2, 0)
    with torch.no_grad():
        top = float(copy.deepcopy(net).double()(box_sample(lo, hi, 20000)).amax(0)[0])
    t = top + 0.03 * abs(top)
    prop = Property(lo, hi, (Disjunct(torch.tensor([[-1.0, 0.0, 0.0]]), torch.tensor([-t])),))
    st = bab.BabStats()
    assert bab.input_split(g, prop, (2,), net, deadline=torch.inf, stats=st)[0] == "holds"
    assert st.domains > 1  # it branched


@pytest.mark.parametrize("seed", range(3))
def test_searches_with_and_without_parent_bounds_agree(seed):
    n_in = 3
    net = relu_mlp(seed + 10, n_in)
    g = graph_of(net, (n_in,))
    lo, hi = -torch.ones(n_in, dtype=torch.float64), torch.ones(n_in, dtype=torch.float64)
    with torch.no_grad():
        top = float(copy.deepcopy(net).double()(box_sample(lo, hi, 20000)).amax(0)[0])
    t = top + 0.02 * abs(top)
    prop = Property(lo, hi, (Disjunct(torch.tensor([[-1.0, 0.0, 0.0]]), torch.tensor([-t])),))
    for reuse in (True, False):
        gen = bab.search_steps(g, prop, (n_in,), net, lookahead=1, reuse_parent=reuse)
        assert bab.portfolio([gen], torch.inf)[0] == "holds"


def test_a_linear_network_keeps_no_parent_bounds_and_is_still_bounded():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 2)).eval()
    g = graph_of(net, (3,))
    lo, hi = torch.zeros(2, 3, dtype=torch.float64), torch.ones(2, 3, dtype=torch.float64)
    C = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    kept: list = []
    lb, _, _ = bab.bound_boxes(g, lo, hi, C, (3,), keep=kept)
    assert kept[0].shape == (2, 2, 0)  # nothing a relaxation needs: nothing to keep
    w = (net[0].weight[0].double() - net[0].weight[1].double()).detach()
    b = float((net[0].bias[0].double() - net[0].bias[1].double()).detach())
    exact = b + w.clamp(max=0).sum()  # the minimum of a linear function over the unit box
    assert torch.allclose(lb[:, 0].double(), exact.expand(2), rtol=1e-6, atol=1e-6)


def test_one_box_pass_is_shared_only_by_the_same_function(monkeypatch):
    """bounds_and_margins' last one-box pass, kept in the cache it is given (root.RootCache),
    serves a later call on another graph of the same network (embed.reduce builds one per
    caller), never one whose fixed inputs differ, nor another cache."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
    graph = graph_of(net, (4,))
    C = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    dj = (Disjunct(C, torch.tensor([0.0], dtype=torch.float64)),)
    lo = torch.tensor([0.0, 0.0, 0.5, 0.5], dtype=torch.float64)

    def reduced(fixed: float):
        lower = lo.clone()
        lower[2:] = fixed
        upper = lower.clone()
        upper[:2] = 1.0
        red = embed.reduce(graph, net, Property(lower, upper, dj), (4,))
        return red.graph, red.prop.lower[None], red.prop.upper[None]

    g1, l1, h1 = reduced(0.5)
    g2, l2, h2 = reduced(0.5)
    g3, l3, h3 = reduced(0.25)
    rows = C[None]
    cache = root.RootCache(graph)
    d = torch.zeros(1, 1, dtype=torch.float64)
    lb, margin = bab.bounds_and_margins(g1, l1, h1, rows, d, (2,), cache=cache)
    assert g1 is not g2 and root.same_graph(g1, g2) and not root.same_graph(g1, g3)
    assert cache.last(g2, l2, h2, C, "crown", prefix=True) is not None
    assert cache.last(g3, l3, h3, C, "crown", prefix=True) is None
    assert cache.last(g2, l2, h2, C, "forward", prefix=True) is None
    assert root.RootCache(graph).last(g1, l1, h1, C, "crown", prefix=True) is None
    # the second call is served from the cache: the same numbers, no bound pass
    calls = []
    real = bab.bound_boxes
    monkeypatch.setattr(bab, "bound_boxes", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = bab.bounds_and_margins(g2, l2, h2, rows, d, (2,), cache=cache)
    fresh = bab.bounds_and_margins(g2, l2, h2, rows, d, (2,))
    assert len(calls) == 1 and torch.equal(again[0], lb) and torch.equal(again[1], margin)
    assert torch.allclose(fresh[0], lb, rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_the_look_ahead_keeps_every_open_box_within_the_aspect_bound(seed, monkeypatch):
    """An input is split only while its width (relative to the root box's) is at least
    SPLIT_ASPECT of the box's widest: every queued box keeps its narrowest free input above half
    that share of its widest, inputs of very different ranges alike, and the verdict stands."""
    monkeypatch.setattr(bab, "SPLIT_ASPECT", 1 / 8)
    n_in = 3
    net = relu_mlp(seed + 20, n_in)
    lo = torch.tensor([-1.0, -1000.0, 0.0], dtype=torch.float64)
    hi = torch.tensor([1.0, 1000.0, 0.0], dtype=torch.float64)  # the third input fixed
    scaled = nn.Sequential(_Scale(torch.tensor([1.0, 1e-3, 1.0])), net)
    with torch.no_grad():
        top = float(scaled.double()(box_sample(lo, hi, 20000, seed))[:, 0].max())
    scaled.float()
    t = top + 0.01 * abs(top)
    prop = Property(lo, hi, (Disjunct(torch.tensor([[-1.0, 0.0, 0.0]]), torch.tensor([-t])),))
    gen = bab.search_steps(graph_of(scaled, (n_in,)), prop, (n_in,), scaled, lookahead=3)
    width = hi - lo
    for _ in range(40):
        try:
            next(gen)
        except StopIteration as stop:
            assert stop.value[0] == "holds"
            break
        f = gen.gi_frame.f_locals
        rel = ((f["hi_q"] - f["lo_q"]) / width.clamp_min(1e-300))[:, :2]
        if len(rel):
            assert (rel.amin(1) >= 0.5 / 8 * rel.amax(1) * (1 - 1e-12)).all()


class _Scale(nn.Module):
    def __init__(self, s: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("s", s)

    def forward(self, x):
        return x * self.s


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("floor", [bab.SPLIT_FLOOR, 0.5])
def test_the_look_ahead_bounds_only_candidates_it_may_take(seed, floor, monkeypatch):
    """Children along inputs the look-ahead would not take (``SPLIT_FLOOR``, ``SPLIT_ASPECT``)
    are not bounded: the same splits (the same open volumes step by step, the same verdict)
    as when every candidate is bounded, with fewer boxes."""
    monkeypatch.setattr(bab, "SPLIT_FLOOR", floor)
    n_in = 4 + seed % 2
    net = relu_mlp(seed + 70, n_in, width=12, depth=3)
    graph = graph_of(net, (n_in,))
    prop, _, _ = threshold_property(net, n_in, seed, 1.05)
    runs = []
    for to_bound in (bab.to_bound, lambda worth: None):
        monkeypatch.setattr(bab, "to_bound", to_bound)
        st = bab.BabStats()
        gen = bab.search_steps(
            graph, prop, (n_in,), net, lookahead=n_in, batch=16, stats=st, leaf_share=0.0
        )
        volumes = []
        try:
            for _ in range(40):
                volumes.append(next(gen))
            verdict = "open"
        except StopIteration as stop:
            verdict = stop.value[0]
        runs.append((volumes, verdict, st.domains))
    (v1, a1, d1), (v2, a2, d2) = runs
    assert a1 == a2 and len(v1) == len(v2)
    assert v1 == pytest.approx(v2, rel=1e-9, abs=1e-12)
    assert d1 <= d2
