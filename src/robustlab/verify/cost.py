"""Cost estimates that choose how to bound a network within a time budget: whether CROWN's
intermediate bounds are worth their price against forward linear bounds (few inputs), and whether
one bound pass fits in the time left at all."""

from __future__ import annotations

import math

from robustlab.bounds.crown import needs_bounds
from robustlab.bounds.forward import supported as forward_ok
from robustlab.bounds.graph import BoundGraph
from robustlab.bounds.ops.linear import Conv, Linear
from robustlab.bounds.plan import cut_node, row_cost

FORWARD_RATIO = 100.0  # CROWN intermediate bounds this many times dearer: forward bounds too
FORWARD_ONLY_RATIO = 1000.0  # this many times dearer: forward bounds alone
CROWN_RATE = 2e10  # multiply-adds per second assumed when judging whether a bound pass fits
WINDOWED_FROM = 5 * CROWN_RATE  # dense estimates above this are refined with rows' windows


def _prefix_costs(graph: BoundGraph) -> list[int]:
    """Per node, the estimated cost of one backward row from it to the input: a row through a
    node costs its weights (dense layers, convolutions at every position) or its size."""
    cost = [0]
    for node in graph.nodes[1:]:
        w = getattr(node.op, "weight", None)
        if isinstance(node.op, Conv):
            step = w.numel() * math.prod(node.shape[1:])
        elif isinstance(node.op, Linear):
            step = w.numel()
        else:
            step = math.prod(node.shape)
        cost.append(cost[-1] + step)
    return cost


def crown_cost(graph: BoundGraph) -> float:
    """Estimated multiply-adds of CROWN's intermediate bounds on one box: two rows per neuron of
    every node whose bounds a relaxation uses (an upper estimate: only unstable ReLU neurons
    get rows), each row as costly as its window on the way back (``plan.row_cost``) when that
    is less than the dense step's cost."""
    cost = _prefix_costs(graph)
    need = needs_bounds(graph)
    total = float(sum(2 * math.prod(graph.nodes[j].shape) * cost[j] for j in need))
    if total <= WINDOWED_FROM:  # cheap enough: windows are not worth estimating (0.1-1 s)
        return total
    total = 0.0
    for j in need:
        per_row = cost[j]
        if len(graph.nodes[j].shape) == 3:  # rows on feature maps keep their windows
            per_row = min(per_row, row_cost(graph, j))
        total += 2 * math.prod(graph.nodes[j].shape) * per_row
    return total


def crown_over_forward(graph: BoundGraph) -> float:
    """Estimated cost of CROWN intermediate bounds for one box over that of forward linear
    bounds, which carry one column per input (inf when forward bounds do not support the
    graph). With a cut (``plan.cut_node``: a GAN's generator output) forward bounds come with
    CROWN's rows that end at the cut (mixed mode, ``bab.bound_boxes``), and full CROWN rows
    would cross what lies before the cut once per row: inf, forward (mixed) bounds alone."""
    if not forward_ok(graph):
        return math.inf
    if cut_node(graph) is not None:
        return math.inf
    forward_cost = (math.prod(graph.nodes[0].shape) + 1) * _prefix_costs(graph)[-1]
    return crown_cost(graph) / max(forward_cost, 1)
