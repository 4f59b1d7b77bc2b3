from torch import nn

from robustlab.bounds.graph import graph_of
from robustlab.verify.cost import FORWARD_RATIO, crown_cost, crown_over_forward


def _mlp(n_in: int, width: int, depth: int) -> nn.Module:
    layers, k = [], n_in
    for _ in range(depth):
        layers += [nn.Linear(k, width), nn.ReLU()]
        k = width
    return nn.Sequential(*layers, nn.Linear(k, 1))


def test_hand_computed_cost():
    # Linear(2, 3) -> ReLU -> Linear(3, 1): the ReLU input (3 neurons) needs 2 rows each through
    # the first layer's 6 weights; forward bounds carry 2 + 1 columns through 6 + 3 + 3 entries
    g = graph_of(_mlp(2, 3, 1), (2,))
    assert crown_cost(g) == 2 * 3 * 6
    assert crown_over_forward(g) == (2 * 3 * 6) / (3 * (6 + 3 + 3))
    assert crown_cost(graph_of(nn.Sequential(nn.Linear(4, 2)), (4,))) == 0


def test_forward_bounds_for_few_inputs_and_large_networks_only():
    assert crown_over_forward(graph_of(_mlp(5, 50, 6), (5,))) < FORWARD_RATIO  # ACAS Xu's shape
    assert crown_over_forward(graph_of(_mlp(2, 1000, 8), (2,))) > FORWARD_RATIO  # a TLL's
    assert crown_over_forward(graph_of(_mlp(784, 1000, 8), (784,))) < FORWARD_RATIO


def test_forward_alone_through_a_cut():
    """A generator into a discriminator (a waist, plan.cut_node): forward bounds come with CROWN
    rows that end at the cut, so full CROWN intermediate bounds are never chosen (inf)."""
    from ..bounds.test_cut import _gan

    assert crown_over_forward(graph_of(_gan("transposed"), (4,))) == float("inf")
