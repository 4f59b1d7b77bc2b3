import copy

import pytest
import torch
from torch import nn

from robustlab.bounds.graph import graph_of
from robustlab.verify import bab
from robustlab.verify.embed import reduce
from robustlab.verify.spec import Disjunct, Property


def _conv_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 16, 8),
        nn.Sigmoid(),
        nn.Linear(8, 3),
    ).eval()


def _prop(seed: int, free: list[int]) -> Property:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(32, generator=g, dtype=torch.float64) + 1e-9  # not float32 numbers
    lo, hi = x.clone(), x.clone()
    lo[free] -= 0.2
    hi[free] += 0.2
    C = torch.tensor([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]], dtype=torch.float64)
    return Property(lo, hi, (Disjunct(C, torch.zeros(2, dtype=torch.float64)),))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("intermediate", ["crown", "forward"])
def test_bounds_over_the_free_inputs_equal_those_over_the_whole_input(seed, intermediate):
    net, shape = _conv_net(seed), (2, 4, 4)
    graph = graph_of(net, shape)
    prop = _prop(seed, [3, 7, 20])
    red = reduce(graph, net, prop, shape)
    assert red is not None and red.free.tolist() == [3, 7, 20]
    C = prop.disjuncts[0].C
    full, _, _ = bab.bound_boxes(graph, prop.lower[None], prop.upper[None], C, shape, intermediate)
    part, _, _ = bab.bound_boxes(
        red.graph, red.prop.lower[None], red.prop.upper[None], C, (3,), intermediate
    )
    torch.testing.assert_close(part, full, rtol=1e-9, atol=1e-9)
    # at points (zero-width boxes) the bound is the network's value there
    exact = copy.deepcopy(net).double()
    g = torch.Generator().manual_seed(seed)
    for _ in range(5):
        z = red.prop.lower + torch.rand(3, generator=g, dtype=torch.float64) * 0.4
        at, _, _ = bab.bound_boxes(red.graph, z[None], z[None], C, (3,), intermediate)
        y = exact(red.expand(z).reshape(1, *shape))[0]
        torch.testing.assert_close(at[0], C @ y, rtol=1e-9, atol=1e-9)
        with torch.no_grad():
            torch.testing.assert_close(
                red.model(z.float()[None])[0].double(), y, rtol=1e-5, atol=1e-5
            )


def test_every_input_free_is_not_reduced():
    net = _conv_net(0)
    graph = graph_of(net, (2, 4, 4))
    assert reduce(graph, net, _prop(0, list(range(32))), (2, 4, 4)) is None
