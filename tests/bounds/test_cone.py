"""Intermediate bounds only in the cone of the rows bounded (``plan.cone``): the same bounds of
those rows as with every neuron refined, fewer backward rows, and the cone by hand."""

import pytest
import torch
from torch import nn

from robustlab.bounds import crown as crown_mod
from robustlab.bounds import intermediate
from robustlab.bounds.crown import crown
from robustlab.bounds.forward import affordable
from robustlab.bounds.graph import graph_of
from robustlab.bounds.ops.base import InputRegion
from robustlab.bounds.plan import cone, row_cost

from .nets import KINDS, make
from .test_window_pool import PoolNet


class Local(nn.Module):
    """Convolutions, max pooling and a 1x1 head: each output pixel sees part of the input."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 3, 1)

    def forward(self, x):
        h = self.pool(torch.relu(self.c1(x)))
        h = torch.relu(self.c2(h) - 0.05)
        return self.head(h).flatten(1)


def _nets():
    torch.manual_seed(3)
    yield Local().eval(), (2, 12, 12)
    torch.manual_seed(4)
    yield PoolNet().eval(), (2, 10, 9)
    for kind in KINDS:
        yield make(kind, 1)


@pytest.mark.parametrize("case", range(2 + len(KINDS)))
def test_cone_gives_the_same_bounds(monkeypatch, case):
    net, shape = list(_nets())[case]
    graph = graph_of(net, shape)
    g = torch.Generator().manual_seed(case)
    x0 = torch.rand(2, *shape, generator=g, dtype=torch.float64)
    region = InputRegion(x0 - 0.05, x0 + 0.05)
    out_shape = graph.nodes[graph.output].shape
    C = torch.zeros(2, 2, *out_shape, dtype=torch.float64).reshape(2, 2, -1)
    C[:, 0, 0] = 1.0
    C[:, 1, -1] = -2.0
    C = C.reshape(2, 2, *out_shape)
    rows = []
    real = crown_mod.two_sided

    def spy(graph, bounds, target, C, *a, **k):
        rows.append(C.shape[1])
        return real(graph, bounds, target, C, *a, **k)

    monkeypatch.setattr(crown_mod, "two_sided", spy)
    monkeypatch.setattr(intermediate, "two_sided", spy)
    full, _ = crown(graph, region, C)
    n_full, rows[:] = sum(rows[:-1]), []
    part, _ = crown(graph, region, C, in_cone=True)
    n_part = sum(rows[:-1])
    assert torch.allclose(part.lower, full.lower, rtol=1e-12, atol=1e-12)
    assert torch.allclose(part.upper, full.upper, rtol=1e-12, atol=1e-12)
    assert n_part <= n_full
    if case == 0:
        assert n_part < n_full  # the corner pixels do not see the whole input


def test_cone_by_hand():
    """A 3x3 convolution then a 1x1 one on a 5x5 map: output pixel (0, 0) reaches the 2x2
    corner of the hidden map and input pixels (0..1, 0..1); max pooling 2x2 widens it."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 1, 1))
    graph = graph_of(net, (1, 5, 5))
    C = torch.zeros(1, 1, 1, 5, 5)
    C[0, 0, 0, 0, 0] = 1
    reach = cone(graph, graph.output, C)
    hidden = reach[2].reshape(2, 5, 5)
    assert hidden[:, :1, :1].all() and int(hidden.sum()) == 2
    inp = reach[0].reshape(5, 5)
    assert inp[:2, :2].all() and int(inp.sum()) == 4
    pooled = nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(1, 1, 1))
    graph = graph_of(pooled, (1, 4, 4))
    C = torch.zeros(1, 1, 1, 2, 2)
    C[0, 0, 0, 1, 0] = 1
    reach = cone(graph, graph.output, C)
    assert reach[2].reshape(4, 4)[2:, :2].all() and int(reach[2].sum()) == 4


def test_row_cost_counts_windows():
    """A row from the centre of the second 3x3 convolution's output (9x9 maps): per node on the
    way back, its window's neurons times the inputs each reads (a convolution's fan-in)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 1, 3, padding=1))
    graph = graph_of(net, (2, 9, 9))
    # node 3 (the last convolution): itself 1 x 18, ReLU 18 x 1, first convolution 18 x 18,
    # input 2 x 5 x 5 = 50
    assert row_cost(graph, 3) == 18 + 18 + 18 * 18 + 50
    dense = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    graph = graph_of(dense, (4,))
    assert row_cost(graph, 3) == 3 + 3 + 3 * 4 + 4


def test_forward_bounds_affordable_by_size():
    small = graph_of(nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2)), (5,))
    assert affordable(small)
    conv = graph_of(nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU()), (3, 52, 52))
    assert not affordable(conv)  # 43264 neurons x 8113 columns
    assert affordable(conv, max_entries=2**29)
