"""Cost estimates that choose how to bound a network within a time budget: whether CROWN's
intermediate bounds are worth their price against forward linear bounds (few inputs), whether
rows that end at a cut (mixed mode) are worth theirs against CROWN's rows without it, and whether
one bound pass fits in the time left at all."""

from __future__ import annotations

import math
from collections.abc import Mapping

from robustlab.bounds.forward import supported as forward_ok
from robustlab.bounds.graph import BoundGraph, Bounds
from robustlab.bounds.intermediate import needs_bounds
from robustlab.bounds.plan import cut_node, row_cost, step_cost

FORWARD_RATIO = 100.0  # CROWN intermediate bounds this many times dearer: forward bounds too
FORWARD_ONLY_RATIO = 1000.0  # this many times dearer: forward bounds alone
CROWN_RATE = 2e10  # multiply-adds per second assumed when judging whether a bound pass fits
WINDOWED_FROM = 5 * CROWN_RATE  # dense estimates above this are refined with rows' windows
# rows that end at a cut where they cost at most this share of CROWN's rows without it (every
# neuron counted): VNN-COMP 2023's cGAN nets 0.30-0.80, but 0.945 with an upsampling generator
# and 0.968 with a tanh at the cut (there full CROWN was as fast or faster on the root box,
# and tighter); TLL nets 0.956-0.999 (a waist near the output: nearly every row lies before it)
CUT_SHARE = 0.9


def _prefix_costs(graph: BoundGraph) -> list[int]:
    """Per node, the estimated cost of one backward row from it to the input: a row through a
    node costs its weights (dense layers, convolutions at every position) or its size
    (``plan.step_cost``)."""
    cost = [0]
    for k in range(1, len(graph.nodes)):
        cost.append(cost[-1] + step_cost(graph, k))
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


def _cut_row_costs(graph: BoundGraph, cut: int) -> tuple[dict[int, float], dict[int, float]]:
    """Per node whose bounds a relaxation uses, and for the cut itself: the cost of one row to
    the input; per such node after the cut: of one row to the cut. Rows on feature maps keep
    their windows (``plan.row_cost``), others are dense. Computed once per graph (its plan's
    ``memo``)."""
    memo = graph.plan.memo
    if ("cut rows", cut) not in memo:
        pc = _prefix_costs(graph)
        maps = {j: len(graph.nodes[j].shape) == 3 for j in [*graph.plan.needs, cut]}
        to_input = {j: min(pc[j], row_cost(graph, j)) if m else pc[j] for j, m in maps.items()}
        to_cut = {
            j: min(pc[j] - pc[cut], row_cost(graph, j, stop=cut)) if maps[j] else pc[j] - pc[cut]
            for j in graph.plan.needs
            if j > cut
        }
        memo["cut rows", cut] = (to_input, to_cut)
    return memo["cut rows", cut]


def mixed_costs(
    graph: BoundGraph, cut: int, bounds: Mapping[int, Bounds] | None = None
) -> tuple[float, float]:
    """Estimated multiply-adds of CROWN's intermediate bounds without and with rows that end at
    ``cut`` (``intermediate.intermediate_bounds``' mixed mode): two rows per neuron whose bounds a
    relaxation reads (unstable ReLU inputs under ``bounds``, summed over their boxes; every
    neuron without them), each to the input without the cut; with it, rows before the cut go
    to the input, rows after it end at the cut, and the cut's own two lines per neuron (and
    box) go to the input."""
    to_input, to_cut = _cut_row_costs(graph, cut)
    boxes = 1 if bounds is None else len(next(iter(bounds.values())).lower)
    rows = {}
    for j, unstable_only in graph.plan.needs.items():
        if bounds is None or j not in bounds:
            rows[j] = boxes * math.prod(graph.nodes[j].shape)
            continue
        lo, hi = bounds[j].lower, bounds[j].upper
        rows[j] = int(((lo < 0) & (hi > 0)).sum() if unstable_only else (lo < hi).sum())
    without = sum(2 * n * to_input[j] for j, n in rows.items())
    lines = 2 * boxes * math.prod(graph.nodes[cut].shape) * to_input[cut]
    # the cut's own neurons: their lines are their CROWN bounds (no rows of their own)
    mixed = lines + sum(
        2 * n * (to_cut[j] if j > cut else to_input[j]) for j, n in rows.items() if j != cut
    )
    return without, mixed


def mixed_pays(graph: BoundGraph, cut: int) -> bool:
    """Whether rows that end at ``cut`` are worth it: their rows cost at most ``CUT_SHARE`` of
    CROWN's without the cut (:func:`mixed_costs`, every neuron counted: a property of the
    graph, the same for every box, computed once). A GAN's generator output: the
    discriminator's rows stop crossing the transposed convolutions once each; a waist near a
    deep MLP's output: nearly every row lies before it, and the mixed mode would cost what
    CROWN costs (with looser bounds)."""
    memo = graph.plan.memo
    if ("mixed pays", cut) not in memo:
        without, mixed = mixed_costs(graph, cut)
        memo["mixed pays", cut] = mixed <= CUT_SHARE * without
    return memo["mixed pays", cut]


def mixed_mode(graph: BoundGraph) -> bool:
    """Whether forward bounds on ``graph`` come with CROWN's rows that end at a cut
    (``bab.bound_boxes``): a cut (``plan.cut_node``) where :func:`mixed_pays`."""
    cut = cut_node(graph)
    return cut is not None and mixed_pays(graph, cut)


def crown_over_forward(graph: BoundGraph) -> float:
    """Estimated cost of CROWN intermediate bounds for one box over that of forward linear
    bounds, which carry one column per input (inf when forward bounds do not support the
    graph). Where the mixed mode pays (a cut, ``plan.cut_node``, with :func:`mixed_pays`: a
    GAN's generator output) forward bounds come with CROWN's rows that end at the cut
    (``bab.bound_boxes``), and full CROWN rows would cross what lies before the cut once per
    row: inf, forward (mixed) bounds alone."""
    if not forward_ok(graph) or mixed_mode(graph):
        return math.inf
    forward_cost = (math.prod(graph.nodes[0].shape) + 1) * _prefix_costs(graph)[-1]
    return crown_cost(graph) / max(forward_cost, 1)
