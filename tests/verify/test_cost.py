import pytest
import torch
from torch import nn

from robustlab.bounds.backward import backward
from robustlab.bounds.forward import forward_bounds
from robustlab.bounds.graph import graph_of
from robustlab.bounds.ops.base import Bounds, InputRegion
from robustlab.bounds.plan import cut_node, step_cost
from robustlab.verify import bab
from robustlab.verify.cost import (
    FORWARD_RATIO,
    crown_cost,
    crown_over_forward,
    mixed_costs,
    mixed_pays,
)


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
    """A generator into a discriminator (a waist, plan.cut_node, where the mixed mode pays):
    forward bounds come with CROWN rows that end at the cut, so full CROWN intermediate bounds
    are never chosen (inf)."""
    from ..bounds.test_cut import _gan

    assert crown_over_forward(graph_of(_gan("transposed"), (4,))) == float("inf")


def _waist_mlp() -> nn.Module:
    """2 -> 4 -> ReLU -> 1 (the cut: narrower than its input, no wider than the next node) -> 3
    -> ReLU -> 2 -> ReLU -> 1: two nodes whose bounds a relaxation reads after the cut."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1), nn.Linear(1, 3), nn.ReLU(),
        nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1),
    ).eval()  # fmt: skip


def test_hand_computed_mixed_costs():
    # dense rows (no feature maps); prefix costs per node: 8, 12, 16, 19, 22, 28, 30, 32.
    # Without the cut: ReLU inputs 1 (4 neurons), 4 (3), 6 (2), two rows each to the input:
    # 2*4*8 + 2*3*19 + 2*2*28 = 290. With it (node 3): the cut's 2 lines to the input (2*1*16),
    # rows before it as before (64), rows after it to the cut only: 2*3*3 + 2*2*12 -> 162.
    g = graph_of(_waist_mlp(), (2,))
    assert cut_node(g) == 3
    assert mixed_costs(g, 3) == (290, 32 + 64 + 18 + 48)
    # measured on a box: only unstable ReLU inputs get rows (here node 1's neurons all stable)
    lo = torch.tensor([[-1.0, -1.0]], dtype=torch.float64)
    bounds = forward_bounds(g, InputRegion(lo, -lo))
    stable = {**bounds, 1: Bounds(bounds[1].lower.abs() + 1, bounds[1].upper.abs() + 2)}
    without, mixed = mixed_costs(g, 3, stable)
    u4, u6 = (int(((stable[j].lower < 0) & (stable[j].upper > 0)).sum()) for j in (4, 6))
    assert (without, mixed) == (2 * u4 * 19 + 2 * u6 * 28, 32 + 2 * u4 * 3 + 2 * u6 * 12)


def test_a_waist_near_the_output_of_a_deep_mlp_is_not_used():
    """A TLL's shape (VNN-COMP 2023 tllverifybench): a waist of width 3 near the output of a
    wide network, so nearly every CROWN row lies before it and the mixed mode would cost what
    CROWN costs: the cut is found but does not pay; forward bounds then come alone (the same
    bounds as without any cut) and the usual cost ratio decides."""
    torch.manual_seed(0)
    layers = [nn.Linear(2, 64), nn.ReLU()]
    for _ in range(5):  # six ReLU layers of 64 before the waist (the TLL nets: 10 of 40-4096)
        layers += [nn.Linear(64, 64), nn.ReLU()]
    tail = [nn.Linear(64, 3), nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 4), nn.ReLU()]
    net = nn.Sequential(*layers, *tail, nn.Linear(4, 1)).eval()
    g = graph_of(net, (2,))
    cut = cut_node(g)
    assert cut is not None and g.nodes[cut].shape == (3,)
    lo = torch.tensor([[-0.5, -0.5]], dtype=torch.float64)
    region = InputRegion(lo, -lo)
    without, mixed = mixed_costs(g, cut)
    assert mixed > 0.95 * without and not mixed_pays(g, cut)
    assert crown_over_forward(g) < float("inf")
    C = torch.tensor([[1.0]], dtype=torch.float64)
    lb, A, bias = bab.bound_boxes(g, lo, -lo, C, (2,), "forward")
    plain = forward_bounds(g, region)
    lin: dict = {}
    ref = backward(g, plain, g.output, C.expand(1, 1, 1), linear=lin)
    assert torch.equal(lb, ref) and torch.equal(A.reshape(lin["A"].shape), lin["A"])


@pytest.mark.parametrize("kind", ["transposed", "upsample", "tanh"])
def test_a_generator_into_a_discriminator_pays(kind):
    """The cut of a GAN (plan.cut_node) pays (its rows cost about a quarter of CROWN's without
    it), so crown_over_forward sends it to forward (mixed) bounds."""
    from ..bounds.test_cut import _gan

    g = graph_of(_gan(kind), (4,))
    without, mixed = mixed_costs(g, cut_node(g))
    assert mixed <= 0.4 * without and mixed_pays(g, cut_node(g))


def test_a_transposed_convolution_costs_its_weights_at_every_input_position():
    net = nn.Sequential(nn.ConvTranspose2d(2, 3, 4, stride=2, padding=1))
    g = graph_of(net, (2, 5, 5))
    assert step_cost(g, 1) == 2 * 3 * 4 * 4 * 5 * 5
    assert crown_cost(g) == 0  # no relaxation: no rows
