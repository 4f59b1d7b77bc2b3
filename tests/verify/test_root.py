"""A region's first CROWN pass kept for the passes after it (verify/root.py): exact matching,
the same numbers as computing it again, and one intermediate pass per region in the engine."""

import time

import pytest
import torch

import robustlab.bounds.alpha as alpha_module
from robustlab.bounds.graph import graph_of
from robustlab.verify import bab, region_bounds, root, verify
from robustlab.verify.margins import stack_spec
from robustlab.verify.relu_split import relu_split
from robustlab.verify.spec import Disjunct, Property, Spec

from .test_relu_split import _instance, _net, _sampled_min


def _close(a, b, tol=1e-12):
    a, b = a.double(), b.double()
    both_inf = torch.isinf(a) & (a == b)
    diff = torch.where(both_inf, 0.0, (a - b).abs())
    return bool((diff <= tol * (1 + b.abs().nan_to_num(posinf=0, neginf=0))).all())


def _prop(n_in, seed, eps=0.08, shift=0.0):
    """``y_0 - y_1 <= t`` (t just below the attacked minimum: CROWN alone does not refute
    it) or ``y_2 - y_0 <= -1`` on the box ``center +- eps`` (the center moved by ``shift``)."""
    net = _net(n_in, seed)
    g = torch.Generator().manual_seed(seed)
    center = torch.rand(n_in, generator=g) + shift
    threshold = _sampled_min(net, center, eps, n=2000) - 1e-3
    c = center.double()
    rows = (
        Disjunct(torch.tensor([[1.0, -1.0, 0.0]]).double(), torch.tensor([threshold]).double()),
        Disjunct(torch.tensor([[-1.0, 0.0, 1.0]]).double(), torch.tensor([-1.0]).double()),
    )
    return net, center, threshold, Property(c - eps, c + eps, rows)


def test_a_root_pass_is_the_hold_margins_pass():
    """The kept pass's margins and lower bounds are those of ``bab.hold_margin`` /
    ``bounds_and_margins`` on the same box and rows, to 1e-12."""
    net, _, _, prop = _prop(10, 0)
    graph = graph_of(net, (10,))
    first = root.compute(graph, prop, (10,))
    assert _close(first.margin, bab.hold_margin(graph, prop, (10,)))
    C, d, _ = stack_spec(prop)
    lb, _ = bab.bounds_and_margins(
        graph, prop.lower[None], prop.upper[None], C[None], d[None], (10,)
    )
    assert _close(first.lb, lb[0])
    assert set(first.bounds) == set(range(len(graph.nodes)))


def test_the_cache_matches_exactly_on_box_rows_and_graph():
    net, _, _, prop = _prop(10, 1)
    graph = graph_of(net, (10,))
    first = root.compute(graph, prop, (10,))
    cache = root.RootCache(graph)
    assert cache.put(first)
    C, d, _ = stack_spec(prop)
    assert cache.get(prop.lower.clone(), prop.upper.clone(), C.clone(), d.clone()) is first
    assert cache.of(graph, prop) is first
    nudged = prop.lower.clone()
    nudged[3] = torch.nextafter(nudged[3], torch.tensor(-1.0).double())
    assert cache.get(nudged, prop.upper, C, d) is None  # another box (one ulp)
    assert cache.get(prop.lower, prop.upper, C, d + 1e-9) is None  # other rows
    assert cache.get(prop.lower, prop.upper, C[:1], d[:1]) is None
    assert cache.of(graph_of(_net(10, 5), (10,)), prop) is None  # another graph
    assert cache.put(first)  # kept already
    small = root.RootCache(graph, max_numbers=first.numbers() - 1)
    assert not small.put(first) and small.of(graph, prop) is None


@pytest.mark.parametrize("seed", [0, 1])
def test_relu_split_from_a_kept_pass_takes_the_same_steps(seed):
    """Handing relu_split its region's pass gives the verdict, the domains and the bound calls
    of the run that computes it."""
    net, _, _, prop = _prop(20, seed)
    graph = graph_of(net, (20,))
    runs = []
    for first in (None, root.compute(graph, prop, (20,))):
        st = bab.BabStats()
        end = time.monotonic() + 30
        verdict, _ = relu_split(graph, prop, (20,), net, deadline=end, stats=st, first=first)
        runs.append((verdict, st.domains, st.bound_calls))
    assert runs[0] == runs[1] and runs[0][0] != "timeout"


def test_the_engine_keeps_each_open_regions_pass():
    """Two regions bounded in one batch: each open region's kept pass has the bounds, lower
    bounds and margins of its own pass (1e-12); a region the pass refutes is not kept."""
    net, _, _, first = _prop(12, 0)
    _, _, _, second = _prop(12, 0, shift=0.05)
    c = (first.lower + first.upper) / 2
    dj = first.disjuncts[0]
    refuted = Property(c - 1e-4, c + 1e-4, (Disjunct(dj.C, dj.d - 100.0),))
    spec = Spec.from_properties([first, second, refuted], 12, 3)
    graph = graph_of(net, (12,))
    cache = root.RootCache(graph)
    proven = region_bounds.bounds_refute(
        graph, net, spec, torch.arange(3), (12,), "crown", {}, cache
    )
    assert proven.tolist() == [False, False, True]
    assert cache.of(graph, spec.property(2)) is None
    for r in (0, 1):
        kept = cache.of(graph, spec.property(r))
        own = root.compute(graph, spec.property(r), (12,))
        assert kept is not None
        assert _close(kept.lb, own.lb) and _close(kept.margin, own.margin)
        for j, b in own.bounds.items():
            assert _close(kept.bounds[j].lower, b.lower) and _close(kept.bounds[j].upper, b.upper)


def test_relu_split_runs_one_intermediate_pass_per_region(tmp_path, monkeypatch):
    """verify on a property CROWN alone cannot prove: the engine's CROWN pass is the only
    intermediate bound pass (the hold margin and alpha-CROWN start from it), and it holds."""
    calls = {"intermediate": 0, "alpha crown": 0}
    inner, crown_fn = bab.intermediate_bounds, alpha_module.crown

    def counted(*a, **k):
        calls["intermediate"] += 1
        return inner(*a, **k)

    def counted_crown(*a, **k):
        calls["alpha crown"] += 1
        return crown_fn(*a, **k)

    monkeypatch.setattr(bab, "intermediate_bounds", counted)
    monkeypatch.setattr(alpha_module, "crown", counted_crown)
    net, center, threshold, _ = _prop(20, 0)
    onnx_path, vnnlib = _instance(tmp_path, net, 20, center, 0.08, threshold)
    r = verify(onnx_path, vnnlib, timeout=15)  # the attacks' shares of it: a short test
    assert r.strategy == "relu-split" and r.verdict == "holds", r
    assert r.stats.get("proved_by") == "relu-split" and r.stats["domains"] > 1
    assert calls == {"intermediate": 1, "alpha crown": 0}


@pytest.mark.parametrize("seed", [0, 1])
def test_nonlinear_split_from_a_kept_pass_agrees_with_sampling(seed):
    """A sigmoid / tanh network (no ReLU): started from the region's kept pass, the verdict is
    the one of the run that computes its own bounds, and a holds is never below a sample."""
    from torch import nn

    from robustlab.verify.nonlinear_split import nonlinear_split

    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Linear(6, 12), nn.Sigmoid(), nn.Linear(12, 12), nn.Tanh(), nn.Linear(12, 3)
    ).eval()
    center = torch.rand(6)
    low = _sampled_min(net, center, 0.3, n=2000)
    C = torch.tensor([[1.0, -1.0, 0.0]], dtype=torch.float64)
    graph = graph_of(net, (6,))
    for t in (low - 0.02, low + 0.02):
        d = torch.tensor([t], dtype=torch.float64)
        c = center.double()
        prop = Property(c - 0.3, c + 0.3, (Disjunct(C, d),))
        verdicts = []
        for first in (None, root.compute(graph, prop, (6,))):
            end = time.monotonic() + 20
            verdicts.append(nonlinear_split(graph, prop, (6,), net, deadline=end, first=first)[0])
        assert verdicts[0] == verdicts[1] and verdicts[0] != "timeout", verdicts
        assert verdicts[0] != "holds" or t < low


def test_the_engines_alpha_crown_pass_is_the_roots():
    """After the engine's CROWN and alpha-CROWN passes on a region they leave open, the root
    of its branch and bound is that alpha-CROWN pass: the same bounds (1e-12) as starting
    alpha-CROWN from the kept CROWN pass again."""
    net, _, _, prop = _prop(12, 0)
    graph = graph_of(net, (12,))
    spec = Spec.from_properties([prop], 12, 3)
    cache, margins = root.RootCache(graph), {}
    for method in ("crown", "alpha-crown"):
        proven = region_bounds.bounds_refute(
            graph, net, spec, torch.arange(1), (12,), method, margins, cache
        )
        assert not proven.any()
    kept = cache.of(graph, prop)
    assert kept is not None and kept.alpha is not None
    _, lb, bounds = root.start(graph, prop, (12,), kept)
    again = root.RootPass(*[getattr(kept, f) for f in ("lower", "upper", "C", "d", "bounds")],
                          kept.lb, kept.margin)  # fmt: skip
    _, lb2, bounds2 = root.start(graph, prop, (12,), again)
    assert _close(lb, lb2)
    for j, b in bounds2.items():
        assert _close(bounds[j].lower, b.lower) and _close(bounds[j].upper, b.upper)
