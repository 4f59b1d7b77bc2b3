"""Input splitting over the inputs that vary: a region whose box pins most inputs to constants
(dist_shift: 8 latent inputs of 792; patch attacks) is bounded as a network of the free inputs
alone, with a first affine node ``x = E z + x_fixed`` that places them among the constants
(float64, exact). Forward linear bounds then carry one column per free input, and CROWN's
coefficients on the input shrink likewise."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustlab.bounds.graph import BoundGraph, Node
from robustlab.bounds.ops.linear import Linear, Reshape
from robustlab.verify.spec import Property


class _Placed(nn.Module):
    """``model`` evaluated at the free inputs ``z`` placed among the fixed ones (float32)."""

    def __init__(self, model: nn.Module, free: Tensor, base: Tensor, shape) -> None:
        super().__init__()
        self.model, self.free, self.base, self.shape = model, free, base.float(), tuple(shape)

    def forward(self, z: Tensor) -> Tensor:
        x = self.base.expand(len(z), -1).clone()
        x[:, self.free] = z.reshape(len(z), -1).to(x.dtype)
        return self.model(x.reshape(len(z), *self.shape))


@dataclass(frozen=True)
class Reduced:
    """A region's problem over its free inputs: the graph, the property and a model of ``z``."""

    graph: BoundGraph
    prop: Property
    model: nn.Module
    free: Tensor  # indices of the free inputs in the flat input
    base: Tensor  # the full input, free entries at their lower bounds (float64)

    def expand(self, z: Tensor) -> Tensor:
        """The full flat input (float64) for free inputs ``z``."""
        x = self.base.clone()
        x[self.free] = z.double().reshape(-1)
        return x


def reduce(graph: BoundGraph, model: nn.Module, prop: Property, shape) -> Reduced | None:
    """The region's problem over its free inputs, or None when every input is free."""
    free = (prop.upper > prop.lower).nonzero().squeeze(1)
    n = prop.lower.numel()
    if len(free) == n:
        return None
    k = max(len(free), 1)
    E = torch.zeros(n, k, dtype=torch.float64)
    E[free, torch.arange(len(free))] = 1.0
    base = prop.lower.double().clone()
    fixed = base.clone()
    fixed[free] = 0.0  # x = E z + fixed: the free entries come from z alone
    nodes = [Node("free inputs", None, (), (k,)), Node("placed", Linear(E, fixed), (0,), (n,))]
    if tuple(shape) != (n,):
        nodes.append(Node("placed as input", Reshape(tuple(shape)), (1,), tuple(shape)))
    shift = len(nodes) - 1  # original node i becomes i + shift
    for node in graph.nodes[1:]:
        nodes.append(Node(node.name, node.op, tuple(j + shift for j in node.inputs), node.shape))
    lo = prop.lower[free] if len(free) else prop.lower[:1] * 0
    hi = prop.upper[free] if len(free) else prop.upper[:1] * 0
    assert math.prod(graph.nodes[0].shape) == n
    return Reduced(
        BoundGraph(tuple(nodes)),
        Property(lo, hi, prop.disjuncts),
        _Placed(model, free, base, shape),
        free,
        base,
    )
