"""Intermediate bounds for CROWN: every activation's input gets bounds from backward passes
(``backward.py``) of identity rows on its neurons, only for those that interval bounds leave
unstable and that a relaxation reads (``plan.needs``); how those rows are chosen and batched
(the union's rows, each example's own padded or ragged ones, windows, rows taken through the
node's own dense layer) is :func:`refine`'s. ``method="ibp"`` gives CROWN-IBP's interval bounds
(Zhang et al. 2020, arXiv:1906.06316).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from robustlab import deadline
from robustlab.bounds import rounding, window
from robustlab.bounds.backward import MAX_ELEMENTS, backward, two_sided
from robustlab.bounds.coef import wrap
from robustlab.bounds.forward import Lin
from robustlab.bounds.graph import BoundGraph, Bounds
from robustlab.bounds.ops.activation import ReLU
from robustlab.bounds.ops.base import LinearOp
from robustlab.bounds.plan import ACTIVATION, LINEAR, cone
from robustlab.bounds.rows import identity_rows, ragged_rows, slice_region, stepped

RAGGED_ELEMENTS = 2**17  # coefficient entries per pass of ragged rows (``refine``: in cache)


def needs_bounds(graph: BoundGraph) -> dict[int, bool]:
    """Nodes whose bounds a relaxation uses -> whether only unstable neurons matter (ReLU)."""
    return dict(graph.plan.needs)


def refine(
    graph,
    bounds,
    i: int,
    unstable_only: bool,
    alphas=None,
    cache=None,
    intersect: bool = True,
    within: Tensor | None = None,
    stops: Mapping[int, Lin] | None = None,
    windows: bool = True,
    split_min: int = 2**21,
    ragged: float = 0.5,
) -> Bounds:
    """Tighten the bounds of node ``i`` with backward passes (in chunks of rows).

    Rows are the neurons unstable in any example of the batch, or, when each example has far
    fewer than that, each example's own unstable neurons (gathered and padded per example);
    only those in ``within`` (a flat bool mask: ``plan.cone``) when given.
    ``intersect=False`` replaces the interval bounds instead of intersecting with them (as
    auto_LiRPA does; for comparisons only: never tighter). ``stops``: as for :func:`backward`.
    ``windows``: rows on a feature map's neurons kept on their receptive field (window.py).
    ``split_min``: from this many multiply-adds' worth (examples x rows x entries a row
    crosses) on, where only ReLUs read node i, the upper rows go first and a neuron they prove
    dead gets no lower row (its lower bound is not used; it keeps its interval one): on the
    residual CNN 661 of 1,630 rows; two passes instead of one, measured to pay there only.
    ``ragged``: where the examples' own neurons are fewer than this share of (batch x the
    union's), dense rows on a graph of linear steps and activations take one row per (example,
    neuron), every example's rows in one batch (:func:`_refine_ragged`): no rows padded to a
    shared count, one pass instead of one per count. Above it the union's rows stay: they also
    tighten neurons stable in an example (its next interval bounds, intersected), which input
    splitting measurably uses (ACAS Xu 1_1 / prop_6: 2x the boxes with ragged rows at 0.9),
    less the rows of neurons dead in their example where only ReLUs read node i (ragged rows
    too; ``ragged=0``: neither, the padded rows as before).
    """
    b = bounds[i]
    batch = b.lower.shape[0]
    mask = (((b.lower < 0) & (b.upper > 0)) if unstable_only else (b.lower < b.upper)).reshape(
        batch, -1
    )
    if within is not None:
        mask = mask & within.to(mask.device)
    idx = mask.any(0).nonzero().squeeze(1)
    if len(idx) == 0:
        return b
    k = int(mask.sum(1).max())
    lo = b.lower.reshape(batch, -1).clone()
    hi = b.upper.reshape(batch, -1).clone()
    shape = graph.nodes[i].shape
    counts = mask.sum(1)
    sel = counts.nonzero().squeeze(1)
    plain = intersect and alphas is None and batch > 1
    few = int(counts.sum())
    if plain and stops is None and few < ragged * batch * len(idx):
        if _raggable(graph, i, windows, b.lower):
            _refine_ragged(graph, bounds, i, mask, lo, hi, cache)
            return Bounds(lo.reshape(b.lower.shape), hi.reshape(b.upper.shape))
    if plain and stops is None and unstable_only and _raggable(graph, i, windows, b.lower):
        # the union's rows, less those of neurons dead in their example (only ReLUs read
        # node i: such a neuron's bounds are never read): the same bounds, fewer rows
        live = mask.any(0)[None] & (b.upper.reshape(batch, -1) > 0)
        if ragged > 0 and int(live.sum()) < 0.9 * batch * len(idx) and _only_relus(graph, i):
            _refine_ragged(graph, bounds, i, live, lo, hi, cache)
            return Bounds(lo.reshape(b.lower.shape), hi.reshape(b.upper.shape))
    if plain and few * 2 < batch * len(idx):
        # each example with its own unstable neurons, grouped by count (rows padded to a power of 2)
        width = torch.ones_like(counts)
        while (width < counts).any():
            width = torch.where(width < counts, width * 2, width)
        for w in width[sel].unique().tolist():
            group = sel[width[sel] == w]
            k_w = min(int(w), k)
            _refine_rows(graph, bounds, i, mask[group], group, k_w, shape, lo, hi, stops, windows)
        return Bounds(lo.reshape(b.lower.shape), hi.reshape(b.upper.shape))
    in_numel = graph.plan.numel_upto[i]
    chunk = max(1, MAX_ELEMENTS // (2 * batch * in_numel))
    split = (
        unstable_only
        and alphas is None
        and batch * len(idx) * in_numel >= split_min
        and _relu_readers(graph, i)
    )
    for s in range(0, len(idx), chunk):
        deadline.check()
        part = idx[s : s + chunk]
        target, C, step = _rows(graph, i, part, batch, b.lower, alphas, stops, windows)
        if not split:
            nb = two_sided(graph, bounds, target, C, alphas, cache, stops)
            nb = nb if step is None else step.add(nb)
            lo[:, part] = torch.maximum(lo[:, part], nb.lower) if intersect else nb.lower
            hi[:, part] = torch.minimum(hi[:, part], nb.upper) if intersect else nb.upper
            continue
        ub = -backward(graph, bounds, target, _negated(C), cache=cache, stops=stops)
        ub = ub if step is None else step.add(Bounds(ub, ub)).upper
        hi[:, part] = torch.minimum(hi[:, part], ub) if intersect else ub
        live = (hi[:, part] > 0).any(0)  # dead in every example: its lower bound is not used
        if not bool(live.any()):
            continue
        if not bool(live.all()):
            part = part[live]
            target, C, step = _rows(graph, i, part, batch, b.lower, alphas, stops, windows)
        lb = backward(graph, bounds, target, C, cache=cache, stops=stops)
        lb = lb if step is None else step.add(Bounds(lb, lb)).lower
        lo[:, part] = torch.maximum(lo[:, part], lb) if intersect else lb
    return Bounds(lo.reshape(b.lower.shape), hi.reshape(b.upper.shape))


def _rows(graph, i, part, batch, like, alphas, stops, windows):
    """Identity rows on node i's neurons ``part``: (the node they start at, the rows, the
    ``rows.Stepped`` whose bias they miss or None)."""
    shape = graph.nodes[i].shape
    if windows and alphas is None and window.usable(shape):
        return i, window.identity_windows(shape, part, batch, like), None
    step = stepped(graph, i, part, batch, like, stops)
    if step is not None:
        return step.j, step.C, step
    return i, identity_rows(shape, part, batch, like), None


def _negated(C):
    """``-C``, rows shared by the batch kept shared (stride 0)."""
    c = wrap(C)
    if c.shared():
        return c.first().negated().expand(c.shape[0]).raw
    return c.negated().raw


def _relu_readers(graph, i: int) -> bool:
    """Whether every nonlinear operation that reads node i is a ReLU (slope 0): a neuron with
    upper bound <= 0 is then 0 there, in its relaxation and its interval bounds alike, whatever
    its lower bound."""
    readers = [n.op for n in graph.nodes[i + 1 :] if i in n.inputs]
    nonlinear = [op for op in readers if not isinstance(op, LinearOp)]
    return bool(nonlinear) and all(isinstance(op, ReLU) and op.slope == 0 for op in nonlinear)


def _only_relus(graph, i: int) -> bool:
    """Whether every operation that reads node i is a ReLU (slope 0): a neuron with upper
    bound <= 0 is then 0 for all of them, whatever its other bounds."""
    readers = [n.op for n in graph.nodes[i + 1 :] if i in n.inputs]
    return bool(readers) and all(isinstance(op, ReLU) and op.slope == 0 for op in readers)


def _raggable(graph, i: int, windows: bool, like: Tensor) -> bool:
    """Whether :func:`_refine_ragged` can take node i's rows: float64 (a float32 pass bounds
    its rounding per pass: ``Tracker``), dense rows, linear steps and activations only."""
    if rounding.tracked(like) or (windows and window.usable(graph.nodes[i].shape)):
        return False
    return all(k in (LINEAR, ACTIVATION) for k in graph.plan.kinds[1 : i + 1])


def _refine_ragged(graph, bounds, i: int, mask: Tensor, lo: Tensor, hi: Tensor, kept=None) -> None:
    """Backward passes for each example's own neurons ``mask`` (batch, neurons), one row each,
    every example's rows a batch of their own (``lo``, ``hi``: (batch, neurons), tightened in
    place). The relaxations are computed once per example and gathered per row (the pass's
    ``cache``, keyed by the same bounds); ``kept`` (``intermediate_bounds``' cache) keeps the
    per-example ones for the later nodes' passes."""
    box, neuron = mask.nonzero(as_tuple=True)
    n, shape, plan = mask.shape[1], graph.nodes[i].shape, graph.plan
    lines = {}
    for k in range(1, i):
        if plan.kinds[k] == ACTIVATION:
            j = graph.nodes[k].inputs[0]
            hit = None if kept is None else kept.get(("ragged", k))
            if hit is None or hit[0] is not bounds[j]:
                l, u = bounds[j].lower, bounds[j].upper
                full = (l.shape[0], 1, *l.shape[1:])
                op = graph.nodes[k].op
                la, lb, ua, ub = (
                    torch.broadcast_to(t, full).contiguous()
                    for t in rounding.relax(op, l[:, None], u[:, None])
                )
                hit = (bounds[j], (j, op.zero_lower_intercept, (la, lb, ua, ub, ua - la)))
                if kept is not None:
                    kept[("ragged", k)] = hit
            lines[k] = hit[1]
    per = max(1, RAGGED_ELEMENTS // (2 * plan.numel_upto[i]))
    flo, fhi = lo.view(-1), hi.view(-1)
    for s in range(0, len(box), per):
        deadline.check()
        bx, nr = box[s : s + per], neuron[s : s + per]
        step = stepped(graph, i, nr[:, None], len(nr), lo)
        target, C = (i, ragged_rows(shape, nr, lo)) if step is None else (step.j, step.C)
        part: dict = {0: slice_region(bounds[0], bx)}
        cache: dict = {}
        for k, (j, zero, (la, lb, _ua, ub, gap)) in lines.items():
            if k <= target:
                la, ub, gap = (t.index_select(0, bx) for t in (la, ub, gap))
                # dense float64 rows read la, the gap ua - la and ub; lb where it is not 0
                lb = la.new_zeros(()).expand_as(la) if zero else lb.index_select(0, bx)
                part[j] = bounds[j]
                cache[k] = (bounds[j], (la, lb, la + gap, ub), gap)
        nb = two_sided(graph, part, target, C, cache=cache)
        if step is not None:
            nb = step.add(nb)
        pos = bx * n + nr
        flo[pos] = torch.maximum(flo[pos], nb.lower[:, 0])
        fhi[pos] = torch.minimum(fhi[pos], nb.upper[:, 0])


def _refine_rows(graph, bounds, i, sub_mask, group, k, shape, lo, hi, stops=None, windows=True):
    """Backward passes for examples ``group``, rows = each one's first ``k`` masked neurons."""
    per = torch.argsort(sub_mask.to(torch.int8), dim=1, descending=True, stable=True)[:, :k]
    step = None
    if windows and window.usable(shape):
        C = window.identity_windows(shape, per, len(group), lo)
    elif (step := stepped(graph, i, per, len(group), lo, stops)) is not None:
        C = step.C
    else:
        C = torch.zeros(len(group), k, lo.shape[1], dtype=lo.dtype, device=lo.device)
        C = C.scatter_(2, per[:, :, None], 1.0).reshape(len(group), k, *shape)
    part = {
        j: (Bounds(v.lower[group], v.upper[group]) if j else slice_region(v, group))
        for j, v in bounds.items()
        if j <= i
    }
    sub = None if stops is None else {j: v.take(group) for j, v in stops.items() if j < i}
    nb = two_sided(graph, part, i if step is None else step.j, C, stops=sub)
    if step is not None:
        nb = step.add(nb)
    lo[group] = lo[group].scatter_reduce(1, per, nb.lower, "amax")
    hi[group] = hi[group].scatter_reduce(1, per, nb.upper, "amin")


def intermediate_bounds(
    graph: BoundGraph,
    region: Bounds,
    method: str = "crown",
    prior: Mapping[int, Bounds] | None = None,
    cache: dict | None = None,
    intersect: bool = True,
    C: Tensor | None = None,
    windows: bool = True,
    cut=None,
) -> dict[int, Bounds]:
    """Bounds of every node: interval bounds, tightened by CROWN where a relaxation uses them;
    with ``C`` (the rows the bounds are for, (batch, rows, *output shape)) only the neurons in
    their cone (``plan.cone``): the others keep interval bounds, which these rows never read.

    ``cut``: the mixed mode at a narrow cut (``cut.Cut``: every later row ends at the cut
    node's linear bounds in the input; ``cut.mixed_bounds``)."""
    need = graph.plan.needs if method == "crown" else {}
    cache = {} if cache is None else cache  # references and relaxations shared by the chunks
    exact = graph.plan.ibp_exact
    within = cone(graph, graph.output, C) if C is not None and need else {}
    if method != "crown":
        cut = None
    bounds: dict[int, Bounds] = {0: region if cut is None else cut.start(graph, region)}
    stops: dict[int, Lin] | None = None
    for i, node in enumerate(graph.nodes[1:], 1):
        deadline.check()
        b = rounding.safe_ibp(node.op, *[bounds[j] for j in node.inputs])
        if prior and i in prior:
            p = prior[i]
            b = b.intersect(
                rounding.outward(p, b.lower.dtype) if p.lower.dtype != b.lower.dtype else p
            )
        bounds[i] = b
        if cut is not None and i <= cut.node:
            if i == cut.node:  # its lines over the region are its neurons' CROWN bounds
                bounds, stops = cut.at(graph, bounds, region, windows, cache)
                continue
            if not cut.refines_before:
                continue  # the given lines' box refined these (they reach ``prior``)
        if i in need and not exact[i] and i != graph.output:
            unstable_only, only = need[i], within.get(i, None if C is None else False)
            if only is False or (only is not None and not bool(only.any())):
                continue  # no neuron of this node reaches the rows
            bounds[i] = refine(
                graph,
                bounds,
                i,
                unstable_only,
                cache=cache,
                intersect=intersect,
                within=only,
                stops=stops,
                windows=windows,
            )
    return bounds
