"""The LP leaf check of input splitting (leaf_lp): the verified dual bound never exceeds the true
minimum (dense sampling), a refutation is never contradicted by a sample, an answer the dual
does not certify leaves the leaf open, ReLU splits inside the box decide what one LP cannot."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from robustlab.bounds.graph import graph_of
from robustlab.verify import bab, leaf_lp

from .small_nets import box_sample, relu_mlp, threshold_property


def _net(seed: int, n_in: int, width: int = 8, depth: int = 2, n_out: int = 3) -> nn.Module:
    return relu_mlp(seed, n_in, width, depth, n_out)


class _Scaled(nn.Module):
    """An input normalisation, a flatten, then an MLP: the chain of an ONNX ACAS Xu net."""

    def __init__(self, mlp: nn.Module):
        super().__init__()
        self.mlp = mlp

    def forward(self, x):
        return self.mlp(((x - 0.25) * 2.0).flatten(1))


def _box_bounds(graph, chain, lo, hi):
    """CROWN bounds of each hidden pre-activation on the box, as (l, u) per layer."""
    out: dict = {}
    C = torch.zeros(1, graph.nodes[-1].shape[0], dtype=torch.float64)
    C[0, 0] = 1.0
    bab.bound_boxes(graph, lo[None], hi[None], C, tuple(graph.nodes[0].shape), out=out)
    return [(out[j].lower[0].flatten(), out[j].upper[0].flatten()) for j in chain.nodes[:-1]]


def test_relu_chain_reads_mlps_and_refuses_other_graphs():
    mlp = _net(0, 3)
    chain = leaf_lp.relu_chain(graph_of(mlp, (3,)))
    assert chain is not None and len(chain.weights) == 3
    assert np.array_equal(chain.weights[0], mlp[0].weight.detach().double().numpy())
    scaled = leaf_lp.relu_chain(graph_of(_Scaled(mlp), (1, 3)))
    assert scaled is not None and len(scaled.weights) == 3
    x = np.array([0.1, -0.7, 0.3])
    for scale, shift in scaled.inputs:
        x = x * scale + shift
    assert np.allclose(x, (np.array([0.1, -0.7, 0.3]) - 0.25) * 2.0, rtol=0, atol=1e-15)
    other = nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 2)).eval()
    assert leaf_lp.relu_chain(graph_of(other, (3,))) is None
    leaky = nn.Sequential(nn.Linear(3, 4), nn.LeakyReLU(0.1), nn.Linear(4, 2)).eval()
    assert leaf_lp.relu_chain(graph_of(leaky, (3,))) is None


@pytest.mark.parametrize("seed", range(6))
def test_verified_bound_never_exceeds_the_sampled_minimum(seed):
    """Per random row and box: the certified LP bound of C y - d is at most the smallest value
    sampled (the relaxation contains the network), and close to the LP's own optimum."""
    net = _net(seed, 3)
    graph = graph_of(net, (3,))
    chain = leaf_lp.relu_chain(graph)
    g = torch.Generator().manual_seed(seed)
    c = torch.rand(3, generator=g, dtype=torch.float64) - 0.5
    lo, hi = c - 0.3, c + 0.3
    bounds = _box_bounds(graph, chain, lo, hi)
    C = torch.randn(2, 3, generator=g, dtype=torch.float64)
    d = torch.zeros(2, dtype=torch.float64)
    lp = leaf_lp._build(
        chain,
        lo.numpy(),
        hi.numpy(),
        [(a.numpy(), b.numpy()) for a, b in bounds],
        C.numpy(),
        d.numpy(),
    )
    t, w = leaf_lp._solve(lp)
    got = leaf_lp.verified_bound(lp, w)
    assert got <= t + 1e-9 and got >= t - 1e-6 * (1 + abs(t))
    with torch.no_grad():
        y = copy.deepcopy(net).double()(box_sample(lo, hi, 20000, seed))
    worst = float((y @ C.T - d).amax(1).min())  # min over x of max_r (C_r y - d_r)
    assert got <= worst + 1e-12


@pytest.mark.parametrize("seed", range(4))
def test_the_direct_highs_call_agrees_with_linprog(seed, monkeypatch):
    """HiGHS called directly (scipy's bindings) and through ``linprog`` give the same optimum
    and duals that certify the same bound, with and without ReLU splits (equality rows)."""
    if leaf_lp._direct_highs() is None:
        pytest.skip("scipy's HiGHS bindings are not available")
    net = _net(seed, 3, width=12)
    graph = graph_of(net, (3,))
    chain = leaf_lp.relu_chain(graph)
    g = torch.Generator().manual_seed(seed)
    c = torch.rand(3, generator=g, dtype=torch.float64) - 0.5
    lo, hi = c - 0.4, c + 0.4
    bounds = _box_bounds(graph, chain, lo, hi)
    C = torch.randn(2, 3, generator=g, dtype=torch.float64)
    base = leaf_lp._build(
        chain, lo.numpy(), hi.numpy(), [(a.numpy(), b.numpy()) for a, b in bounds],
        C.numpy(), np.zeros(2),
    )  # fmt: skip
    assert len(base.var) >= 2
    for splits in ((), ((0, 1),), ((0, -1), (1, 1))):
        lp = leaf_lp._branch(base, splits)
        direct = leaf_lp._solve(lp)
        with monkeypatch.context() as m:
            m.setattr(leaf_lp, "_core", None)
            m.setattr(leaf_lp, "_LOCAL", leaf_lp.threading.local())
            ref = leaf_lp._solve(lp)
        assert direct is not None and ref is not None
        tol = 1e-7 * (1 + abs(ref[0]))
        assert abs(direct[0] - ref[0]) <= tol
        got, want = leaf_lp.verified_bound(lp, direct[1]), leaf_lp.verified_bound(lp, ref[1])
        assert abs(got - want) <= tol and got <= direct[0] + 1e-9


def test_an_uncertified_answer_leaves_the_leaf_open(monkeypatch):
    """The solver's word alone proves nothing: a claimed optimum of 1 with a dual vector that
    certifies nothing (zero, or the right one negated) is refused."""
    net = _net(1, 2)
    graph = graph_of(net, (2,))
    chain = leaf_lp.relu_chain(graph)
    lo, hi = -torch.ones(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    bounds = _box_bounds(graph, chain, lo, hi)
    with torch.no_grad():
        top = float(copy.deepcopy(net).double()(box_sample(lo, hi, 20000))[:, 0].max())
    C = torch.tensor([[-1.0, 0.0, 0.0]], dtype=torch.float64)
    d = torch.tensor([-(top + 50.0)], dtype=torch.float64)  # y_0 >= top + 50: far out of reach
    assert leaf_lp.refute(chain, lo, hi, bounds, C, d)
    real = leaf_lp._solve
    fakes = [lambda lp: (1.0, np.zeros(len(lp.G))), lambda lp: (1.0, -real(lp)[1])]
    for fake in fakes:
        monkeypatch.setattr(leaf_lp, "_solve", fake)
        assert not leaf_lp.refute(chain, lo, hi, bounds, C, d)
    monkeypatch.setattr(leaf_lp, "_solve", lambda lp: None)  # the solver failed
    assert not leaf_lp.refute(chain, lo, hi, bounds, C, d)


def test_relu_splits_decide_what_one_lp_cannot():
    """y = relu(x) - relu(x) is 0, but the triangle relaxation lets it reach -1/2 at x = 0:
    one LP cannot refute y <= -0.1; splitting both ReLUs (7 LPs) can, and y <= 0 stays open."""
    net = nn.Sequential(nn.Linear(1, 2), nn.ReLU(), nn.Linear(2, 1)).eval()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0], [1.0]]))
        net[0].bias.zero_()
        net[2].weight.copy_(torch.tensor([[1.0, -1.0]]))
        net[2].bias.zero_()
    chain = leaf_lp.relu_chain(graph_of(net, (1,)))
    lo, hi = -torch.ones(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    bounds = [(-torch.ones(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64))]
    C = torch.ones(1, 1, dtype=torch.float64)
    d = torch.tensor([-0.1], dtype=torch.float64)
    assert not leaf_lp.refute(chain, lo, hi, bounds, C, d, max_lps=1)
    assert leaf_lp.refute(chain, lo, hi, bounds, C, d, max_lps=7)
    assert not leaf_lp.refute(chain, lo, hi, bounds, C, torch.zeros(1, dtype=torch.float64), 15)


@pytest.mark.parametrize("seed", range(8))
def test_refutations_agree_with_sampling(seed):
    """On random boxes and rows with thresholds near the sampled extreme, every refutation
    (with ReLU splits) holds on dense samples; far from it, boxes are refuted."""
    n_in = 2 + seed % 2
    net = _net(seed + 20, n_in, width=6)
    graph = graph_of(net, (n_in,))
    chain = leaf_lp.relu_chain(graph)
    g = torch.Generator().manual_seed(seed)
    refuted = 0
    for trial in range(6):
        c = torch.rand(n_in, generator=g, dtype=torch.float64) * 2 - 1
        r = 0.05 + 0.3 * torch.rand(n_in, generator=g, dtype=torch.float64)
        lo, hi = c - r, c + r
        bounds = _box_bounds(graph, chain, lo, hi)
        C = torch.randn(2, 3, generator=g, dtype=torch.float64)
        with torch.no_grad():
            y = copy.deepcopy(net).double()(box_sample(lo, hi, 20000, trial))
        worst = float((y @ C.T).amax(1).min())  # the conjunction C y <= d: reached iff d >= it
        for factor in (-0.02, 0.02, 0.5):
            d = torch.full((2,), worst - factor * (1 + abs(worst)), dtype=torch.float64)
            ok = leaf_lp.refute(chain, lo, hi, bounds, C, d, max_lps=15)
            if factor < 0:  # a sample reaches the conjunction
                assert not ok
            refuted += ok and factor == 0.5
    assert refuted >= 4


def _two_boxes():
    """Two unit boxes of a small net's plane, their packed CROWN bounds for the rows ``C``
    (-Y_0), and Y_0's sampled maximum over both: (chain, lo, hi, C, packed, top)."""
    net = _net(3, 2)
    graph = graph_of(net, (2,))
    chain = leaf_lp.relu_chain(graph)
    lo = torch.tensor([[-1.0, -1.0], [0.0, 0.0]], dtype=torch.float64)
    hi = lo + 1.0
    out: dict = {}
    C = torch.tensor([[-1.0, 0.0, 0.0]], dtype=torch.float64)
    bab.bound_boxes(graph, lo, hi, C, (2,), out=out)
    packed = bab.pack_bounds(graph, out)
    with torch.no_grad():
        top = float(copy.deepcopy(net).double()(box_sample(lo[0], hi[1], 20000))[:, 0].max())
    return chain, lo, hi, C, packed, top


def test_leaf_check_takes_the_closest_boxes_first_within_its_share():
    """LeafCheck.close: no time, no LP; otherwise the box closest to proven goes first."""
    chain, lo, hi, C, packed, top = _two_boxes()
    d = torch.tensor([-(top + 10.0)], dtype=torch.float64)
    check = leaf_lp.LeafCheck(chain, C, d, [slice(0, 1)], share=1.0)
    open_ = torch.ones(2, 1, dtype=torch.bool)
    slack = torch.tensor([[-2.0], [-1.0]], dtype=torch.float64)
    margin = torch.zeros(2, 1, dtype=torch.float64)
    assert check.close(lo, hi, packed, open_, slack, margin, 0.0).all() and check.calls == 0
    check.budget = 1e-9  # time for one box: the second (closer to proven)
    got = check.close(lo, hi, packed, open_, slack, margin, 0.0)
    assert got.tolist() == [[True], [False]] and check.calls == 1 and check.closed == 1


def test_leaf_check_share_follows_its_recent_closing_rate():
    """The LP's budget grows with the fraction of recent boxes it closed: a run of boxes it
    cannot close lowers it, a run it closes raises it again (not its lifetime average)."""
    chain, lo, hi, C, packed, top = _two_boxes()
    far = torch.tensor([-(top + 10.0)], dtype=torch.float64)  # out of reach: closed
    near = torch.tensor([-(top - 1.0)], dtype=torch.float64)  # reached: never closed
    slack = torch.tensor([[-2.0], [-1.0]], dtype=torch.float64)
    margin = torch.zeros(2, 1, dtype=torch.float64)
    check = leaf_lp.LeafCheck(chain, C, near, [slice(0, 1)], share=1.0, memory=4.0)
    open_ = torch.ones(2, 1, dtype=torch.bool)
    rates = []
    for d in (near, near, near, far, far, far):
        check.d, check.budget = d, check.spent + 1.0  # time for both boxes
        check.close(lo, hi, packed, open_, slack, margin, 0.0)
        rates.append(check.rate)
    assert rates[0] < 0.5 and rates[2] < rates[1] < rates[0] and rates[2] < 0.1
    assert rates[5] > rates[4] > rates[3] > rates[2] and rates[5] > 0.8
    assert check.closed == 6 and check.tried == 12
    spent = check.spent
    check.budget = spent
    check.close(lo, hi, packed, open_, slack, margin, 1.0)  # budget grows by rate x 1.0
    assert check.budget == pytest.approx(spent + rates[5])


def _threshold_case(seed: int, factor: float):
    """A small net on [-1, 1]^n (n = 2 or 3) and the property Y_0 >= t unsafe, t the sampled
    maximum of Y_0 scaled by ``factor`` (below 1: reached; above: out of reach):
    (net, graph, n_in, prop, t, top)."""
    n_in = 2 + seed % 2
    net = _net(seed + 40, n_in, width=12, depth=3)
    graph = graph_of(net, (n_in,))
    prop, t, top = threshold_property(net, n_in, seed, factor)
    return net, graph, n_in, prop, t, top


def _search(net, graph, n_in: int, prop, st, leaf_after: float):
    """Input splitting with the leaf checks given most of the time: (verdict, point)."""
    gen = bab.search_steps(
        graph,
        prop,
        (n_in,),
        net,
        lookahead=n_in,
        batch=16,
        stats=st,
        leaf_share=50.0,
        leaf_after=leaf_after,
    )
    return bab.portfolio([gen], torch.inf)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("factor", [0.99, 1.01])
def test_searches_with_the_leaf_check_agree_with_sampling(seed, factor):
    """Input splitting with the LP leaf check given most of the time: Y_0 >= t unsafe, t just
    below or above the sampled maximum; the LP is used where boxes stay open."""
    net, graph, n_in, prop, t, top = _threshold_case(seed, factor)
    st = bab.BabStats()
    verdict, z = _search(net, graph, n_in, prop, st, leaf_after=0.0)
    if t <= top:
        assert verdict == "violated"
        with torch.no_grad():
            assert float(net(z.reshape(1, -1).float())[0, 0]) >= t - 1e-5
    else:
        assert verdict == "holds"
        assert st.domains == 1 or st.lp_calls > 0


@pytest.mark.parametrize("seed", range(2))
def test_leaf_checks_wait_for_leaf_after(seed):
    """The leaf checks (alpha, then the LP) start only once the search's own steps have taken
    ``leaf_after`` seconds: never within an infinite one, from the first step with 0; the
    verdicts agree."""
    net, graph, n_in, prop, t, top = _threshold_case(seed, 1.01)
    verdicts = []
    for after in (0.0, math.inf):
        st = bab.BabStats()
        verdicts.append(_search(net, graph, n_in, prop, st, leaf_after=after)[0])
        if after == math.inf:
            assert st.lp_calls == 0 and st.alpha_closed == 0
        elif st.domains > 1:
            assert st.lp_calls + st.alpha_closed > 0
    assert verdicts == ["holds", "holds"]
