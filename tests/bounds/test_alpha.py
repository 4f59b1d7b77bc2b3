"""alpha-CROWN started from intermediate bounds computed already: the same bounds as computing
them again, and sound where only the neurons in the rows' cone are optimised."""

import copy

import pytest
import torch
from torch import nn

from robustlab.bounds.alpha import alpha_crown
from robustlab.bounds.crown import crown
from robustlab.bounds.graph import graph_of
from robustlab.bounds.ops.base import InputRegion
from robustlab.bounds.plan import cone

from .nets import make


def _close(a, b, tol=1e-12):
    a, b = a.double(), b.double()
    same_inf = torch.isinf(a) & (a == b)
    diff = torch.where(same_inf, 0.0, (a - b).abs())
    return bool((diff <= tol * (1 + b.abs().nan_to_num(posinf=0, neginf=0))).all())


def _setup(kind, seed, rows=2):
    net, shape = make(kind, seed)
    graph = graph_of(net, shape)
    net = copy.deepcopy(net).double()
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(2, *shape, generator=g, dtype=torch.float64)
    region = InputRegion(x0 - 0.1, x0 + 0.1)
    n_out = graph.nodes[graph.output].shape
    C = torch.randn(2, rows, *n_out, generator=g, dtype=torch.float64)
    return net, graph, region, C


@pytest.mark.parametrize("kind", ["mlp", "cnn", "residual", "conv-residual"])
@pytest.mark.parametrize("in_cone", [False, True])
def test_handed_intermediate_bounds_give_the_recomputed_bounds(kind, in_cone):
    """Handing alpha-CROWN the intermediate bounds of its own CROWN pass changes nothing: the
    final and every intermediate bound equal (1e-12) those of the pass that computes them."""
    _, graph, region, C = _setup(kind, 0)
    for upper in (False, True):
        kw = {"bound_upper": upper, "iterations": 5, "in_cone": in_cone}
        fin, inter = alpha_crown(graph, region, C, **kw)
        _, given = crown(graph, region, C, bound_upper=upper, in_cone=in_cone)
        fin2, inter2 = alpha_crown(graph, region, C, intermediate=given, **kw)
        assert _close(fin2.lower, fin.lower) and _close(fin2.upper, fin.upper)
        assert inter.keys() == inter2.keys()
        for i in inter:
            assert _close(inter2[i].lower, inter[i].lower), (kind, i)
            assert _close(inter2[i].upper, inter[i].upper), (kind, i)


def _fully_convolutional(seed):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1), nn.ReLU(),
        nn.Conv2d(3, 2, 3, padding=1),
    ).eval()  # fmt: skip


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cone_only_bounds_contain_sampled_outputs(seed):
    """Rows that read two corners of a feature map (a partial cone): optimising only the
    neurons that reach them keeps the bounds sound (10^4 samples) and no looser than CROWN's."""
    net = _fully_convolutional(seed)
    graph = graph_of(net, (1, 8, 8))
    net = copy.deepcopy(net).double()
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(2, 1, 8, 8, generator=g, dtype=torch.float64)
    region = InputRegion(x0 - 0.2, x0 + 0.2)
    C = torch.zeros(2, 2, 2 * 8 * 8, dtype=torch.float64)
    C[:, 0, 0] = 1.0
    C[:, 1, -1] = -1.0
    C = C.reshape(2, 2, 2, 8, 8)
    within = cone(graph, graph.output, C)
    assert not all(bool(m.all()) for m in within.values())  # the cone is partial
    plain, _ = crown(graph, region, C)
    fin, _ = alpha_crown(graph, region, C, iterations=10, in_cone=True)
    assert (fin.lower >= plain.lower - 1e-12).all() and (fin.upper <= plain.upper + 1e-12).all()
    for b in range(2):
        x = x0[b] + 0.2 * (2 * torch.rand(10_000, 1, 8, 8, generator=g, dtype=torch.float64) - 1)
        with torch.no_grad():
            y = net(x).reshape(len(x), -1) @ C[b].reshape(2, -1).T
        assert (y >= fin.lower[b] - 1e-9).all() and (y <= fin.upper[b] + 1e-9).all()
