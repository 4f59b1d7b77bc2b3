"""Interval bound propagation (Gowal et al. 2018, arXiv:1810.12715)."""

from __future__ import annotations

from torch import Tensor, nn

from robustlab.bounds import rounding
from robustlab.bounds.graph import BoundGraph, Bounds, graph_of
from robustlab.bounds.ops.linear import Linear


def interval_all(graph: BoundGraph, lower: Tensor, upper: Tensor) -> list[Bounds]:
    """Interval bounds of every node of ``graph`` over the box ``[lower, upper]``."""
    bounds = [Bounds(lower, upper)]
    for node in graph.nodes[1:]:
        bounds.append(rounding.safe_ibp(node.op, *[bounds[j] for j in node.inputs]))
    return bounds


def apply_spec(b: Bounds, C: Tensor) -> Bounds:
    """Interval bounds of ``C @ y`` for ``y`` in ``b``; C has shape (batch, m, *shape)."""
    mid = ((b.upper + b.lower) / 2).flatten(1)[:, :, None]
    rad = ((b.upper - b.lower) / 2).flatten(1)[:, :, None]
    Cf = C.flatten(2)
    c, r = (Cf @ mid)[..., 0], (Cf.abs() @ rad)[..., 0]
    return Bounds(c - r, c + r)


def spec_bounds(graph: BoundGraph, bounds: list[Bounds], C: Tensor) -> Bounds:
    """``C @ output`` from interval bounds, folding C into a final linear layer when there is one
    (float32: computed in float64 and rounded outward)."""
    if rounding.tracked(C):
        last = graph.nodes[-1]
        k = last.inputs[0] if isinstance(last.op, Linear) else graph.output
        up = {k: rounding.upcast(bounds[k])}
        return rounding.outward(spec_bounds(graph, up, C.double()), C.dtype)
    last = graph.nodes[-1]
    if isinstance(last.op, Linear):
        b_in = bounds[last.inputs[0]]
        a_in, bias = last.op.backward(C, [graph.nodes[last.inputs[0]].shape])
        return apply_spec(b_in, a_in[0]).shifted(bias)
    return apply_spec(bounds[graph.output], C)


def ibp(model: nn.Module, lower: Tensor, upper: Tensor, C: Tensor | None = None) -> Bounds:
    """Interval bounds on ``model`` (or on ``C @ model``) over the box ``[lower, upper]``."""
    graph = graph_of(model, tuple(lower.shape[1:]))
    bounds = interval_all(graph, lower, upper)
    return bounds[-1] if C is None else spec_bounds(graph, bounds, C.to(lower.dtype))
