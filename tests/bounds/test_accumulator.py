"""The bias side of a backward pass (tracker.py): ``Exact`` (summed bias terms, float64) and
``Tracker`` (float32, rounding bounded) share one interface, so ``backward.backward`` runs either
without branching on which; ``Exact``'s bound is the plain CROWN bound of ``C . h``."""

import copy
import inspect

import torch
from torch import nn

from robustlab.bounds.backward import backward
from robustlab.bounds.graph import graph_of
from robustlab.bounds.intermediate import intermediate_bounds
from robustlab.bounds.ops.base import InputRegion
from robustlab.bounds.tracker import Exact, Tracker

STEPS = ("start", "added", "constant", "linear", "activation", "pool", "last", "finish")


def test_exact_and_tracker_share_the_step_interface():
    for name in STEPS:
        exact = inspect.signature(getattr(Exact, name)).parameters
        tracked = inspect.signature(getattr(Tracker, name)).parameters
        assert len(exact) == len(tracked), name  # the same positional steps
    assert Exact.bias_terms and not Tracker.bias_terms


def test_exact_bound_is_a_lower_bound_of_sampled_outputs():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
    net = net.eval()
    graph = graph_of(net, (5,))
    net64 = copy.deepcopy(net).double()
    x = torch.rand(3, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    region = InputRegion(x - 0.2, x + 0.2)
    C = torch.randn(3, 4, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with torch.no_grad():
        bounds = intermediate_bounds(graph, region)
        lin: dict = {}
        lb = backward(graph, bounds, graph.output, C, linear=lin)
        g = torch.Generator().manual_seed(5)
        xs = region.lower + (region.upper - region.lower) * torch.rand(
            2000, *x.shape, generator=g, dtype=torch.float64
        )
        y = net64(xs.reshape(-1, 5)).reshape(2000, 3, 2)
        val = torch.einsum("brk,sbk->sbr", C, y)
        line = torch.einsum("brk,sbk->sbr", lin["A"], xs) + lin["bias"]
    assert bool((val >= lb - 1e-12).all())
    assert bool((val >= line - 1e-12).all())  # the pass's line holds at every sample
    assert bool((line >= lb - 1e-12).all())  # and its minimum over the box is the bound
