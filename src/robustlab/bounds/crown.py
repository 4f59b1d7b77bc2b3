"""CROWN: bounds by backward propagation of linear relaxations (Zhang et al. 2018,
arXiv:1811.00866), as generalised to any graph in auto_LiRPA (Xu et al. 2020, arXiv:2002.12920).

Every activation's input gets bounds from its own backward pass (only for neurons that interval
bounds leave unstable); ``intermediate="ibp"`` gives CROWN-IBP (Zhang et al. 2020, arXiv:1906.06316).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from robustlab import deadline
from robustlab.bounds import rounding, window
from robustlab.bounds.forward import Lin, substitute
from robustlab.bounds.graph import BoundGraph, Bounds
from robustlab.bounds.ibp import spec_bounds
from robustlab.bounds.ops.activation import ReLU
from robustlab.bounds.ops.base import LinearOp
from robustlab.bounds.ops.pool import MaxPool
from robustlab.bounds.plan import ACTIVATION, BILINEAR, LINEAR, POOL, cone
from robustlab.bounds.rows import identity_rows, ragged_rows, slice_region, stepped
from robustlab.bounds.tracker import Exact, Tracker, covers
from robustlab.bounds.window import Window

MAX_ELEMENTS = 2**25  # coefficient entries per backward pass; more rows are split into chunks
RAGGED_ELEMENTS = 2**17  # coefficient entries per pass of ragged rows (``refine``: in cache)

Alphas = Mapping[int, Tensor]  # activation node -> lower slopes, shape (batch, rows, *shape)


def backward(
    graph: BoundGraph,
    bounds: Mapping[int, Bounds],
    target: int,
    C: Tensor,
    alphas: Alphas | None = None,
    cache: dict | None = None,
    linear: dict | None = None,
    betas: Mapping[int, Tensor] | None = None,
    record: dict | None = None,
    stops: Mapping[int, Lin] | None = None,
) -> Tensor:
    """Lower bound of ``C . node[target]`` for each row of ``C`` (shape (batch, rows, *shape)).

    ``bounds`` must hold the input region (node 0) and the inputs of every activation and
    max-pooling node between the input and ``target``. ``cache`` keeps relaxations between calls
    that share the same bounds. When ``linear`` is given, the lower bound's linear function of
    the input is stored there: ``linear["A"]`` (batch, rows, *input_shape) and ``linear["bias"]``.

    ``betas`` adds, for split constraints (beta-CROWN, Wang et al. 2021, arXiv:2103.06624), a
    coefficient tensor to the node it names when the pass reaches it (shape (batch, rows,
    *shape)). ``record`` receives each activation's coefficients on its output (for branching).

    float32 coefficients on a graph with operations outside the rounding bookkeeping
    (``tracker.covers``: products of two tensors, amax, transposed convolutions, ...) are
    computed in float64 and the bound rounded down to float32: as sound, not faster.

    ``stops``: nodes whose linear bounds in the input are known (``forward.forward_bounds``'s
    ``lins``); rows that reach one end there through those bounds (:func:`forward.substitute`)
    instead of going on to the input (float64 passes; float32 ones go on as before).
    """
    if rounding.tracked(C) and not covers(graph):
        return _in_float64(graph, bounds, target, C, alphas, linear, betas, record)
    A: dict[int, Tensor | Window] = {target: C}
    data = C.data if isinstance(C, Window) else C
    # the bias: summed (float64), or, in float32, bounded with the pass's rounding (tracker.py)
    acc = Tracker(graph, bounds, C, target, cache) if rounding.tracked(C) else Exact(bounds, C)
    plain = acc.bias_terms  # the steps' bias terms are wanted (not a float32 pass)
    stops = stops if plain else None  # float32 passes go on to the input
    plan = graph.plan
    kinds, in_shapes, nodes = plan.kinds, plan.in_shapes, graph.nodes
    for i in range(target, 0, -1):
        deadline.check()  # a pass through a huge network can outlast a verifier's timeout
        a = A.pop(i, None)
        if betas is not None and i in betas:
            acc.start(betas[i], i)
            if a is not None:
                a = _dense(a) + betas[i]
                acc.added(a, i)
            else:
                a = betas[i]
        if a is None:
            continue
        if stops is not None and i in stops and i != target:
            coef, const = substitute(stops[i], _dense(a))
            acc.constant(const)
            _accumulate(A, 0, coef.reshape(*coef.shape[:2], *graph.nodes[0].shape), acc)
            continue
        node = nodes[i]
        op, kind = node.op, kinds[i]
        if kind == LINEAR:
            shapes = in_shapes[i]
            if (
                node.inputs == (0,)
                and not (A or linear is not None or isinstance(a, Window))
                and (betas is None or min(betas) >= i)
            ):  # the last step: fused with the input's bound, a chunk of rows at a time
                lb = acc.last(op, a, shapes, node.inputs, node.shape)
                if lb is not None:
                    return lb
            res = window.linear_backward(op, a, shapes) if isinstance(a, Window) else None
            if res is not None:
                ins, b = res
            elif a.shape[0] > 1 and _dense(a).stride(0) == 0:  # same rows for every example
                a = _dense(a)
                ins, b = op.backward(a[:1], shapes)
                ins = [t.expand(a.shape[0], *t.shape[1:]) for t in ins]
                b = b.expand(a.shape[0], -1)
            else:
                ins, b = op.backward(_dense(a), shapes)
            acc.linear(op, a, ins, node.inputs, node.shape, b)
            if len(ins) == 1 and node.inputs[0] not in A:
                A[node.inputs[0]] = ins[0]
            else:
                for j, aj in zip(node.inputs, ins, strict=True):
                    _accumulate(A, j, aj, acc)
            continue
        if kind == BILINEAR:
            alpha = alphas.get(i) if alphas else None
            ins, b = op.backward(_dense(a), *[bounds[j] for j in node.inputs], in_shapes[i], alpha)
            acc.constant(b)
            for j, aj in zip(node.inputs, ins, strict=True):
                _accumulate(A, j, aj, acc)
            continue
        j = node.inputs[0]
        l, u = bounds[j].lower, bounds[j].upper
        if kind == ACTIVATION:
            if record is not None:
                record[i] = a = _dense(a)
            alpha = alphas.get(i) if alphas else None
            if alpha is None and cache is not None:
                hit = cache.get(i)
                if hit is None or hit[0] is not bounds[j]:
                    lines = rounding.relax(op, l[:, None], u[:, None])
                    hit = (bounds[j], lines, lines[2] - lines[0])
                    cache[i] = hit
                la, lb, ua, ub = hit[1]
                gap = hit[2]
            else:
                la, lb, ua, ub = rounding.relax(op, l[:, None], u[:, None], alpha)
                gap = ua - la
            neg = b = None
            if isinstance(a, Window):
                a_in, b = window.activation_backward(
                    a, la, lb, ua, ub if plain else None, op.zero_lower_intercept
                )
            else:  # a+ la + a- ua, written to touch the (batch, rows, n) coefficients few times
                neg = a.clamp(max=0)
                a_in = a * la
                a_in.addcmul_(neg, gap)  # in place: one (batch, rows, n) allocation fewer
            acc.activation(i, a, la, lb, ua, ub, j, neg, b, op.zero_lower_intercept)
        elif kind == POOL:
            if isinstance(a, Window) and plain and isinstance(op, MaxPool):
                a_in, b = window.pool_backward(op, a, l, u)
            else:
                a = _dense(a)
                a_in, b = op.backward(a, l, u)
            acc.pool(op, a, j, i, b)
        else:
            raise TypeError(f"no backward step for {type(op).__name__} at node '{node.name}'")
        _accumulate(A, j, a_in, acc)
    if 0 not in A:  # the target does not depend on the input
        A[0] = data.new_zeros(*C.shape[:2], *graph.nodes[0].shape)
    return acc.finish(A[0], data.dtype, linear)


def _in_float64(graph, bounds, target, C, alphas, linear, betas, record) -> Tensor:
    """``backward`` in float64, the bound rounded down to C's float32 (``linear``: float64)."""

    def up(t):
        return None if t is None else t.double()

    if isinstance(C, Window):
        C64 = Window(C.data.double(), C.oy, C.ox, C.frame)
    else:
        C64 = C.double()
    items = bounds.items() if isinstance(bounds, Mapping) else enumerate(bounds)
    b64 = {k: rounding.upcast(b) for k, b in items}
    a64 = None if alphas is None else {k: up(v) for k, v in alphas.items()}
    beta64 = None if betas is None else {k: up(v) for k, v in betas.items()}
    lb = backward(graph, b64, target, C64, a64, None, linear, beta64, record)
    return rounding.round_down(lb, torch.float32)


def _accumulate(A: dict, j: int, a: Tensor | Window, acc) -> None:
    """``A[j] += a`` (the sum's rounding is bounded in float32 passes)."""
    if j not in A:
        A[j] = a
        return
    A[j] = window.add(A[j], a)
    acc.added(A[j], j)


def _dense(a: Tensor | Window) -> Tensor:
    return a.dense() if isinstance(a, Window) else a


def two_sided(graph, bounds, target, C, alphas=None, cache=None, stops=None) -> Bounds:
    """Lower and upper bounds of ``C . node[target]`` in one backward pass (rows ``[C; -C]``)."""
    m = C.shape[1]
    data = C.data if isinstance(C, Window) else C
    b = data.shape[0]
    if b > 1 and data.stride(0) == 0 and (not isinstance(C, Window) or C.oy.shape[0] == 1):
        # rows shared by the batch stay shared (the first steps are then one product, not b)
        one = Window(C.data[:1], C.oy, C.ox, C.frame) if isinstance(C, Window) else C[:1]
        both = two_rows(one)
        if isinstance(both, Window):
            both = Window(both.data.expand(b, *both.data.shape[1:]), both.oy, both.ox, C.frame)
        else:
            both = both.expand(b, *both.shape[1:])
    else:
        both = two_rows(C)
    lb = backward(graph, bounds, target, both, alphas, cache, stops=stops)
    return Bounds(lb[:, :m], -lb[:, m:])


def two_rows(C: Tensor | Window) -> Tensor | Window:
    """Rows ``[C; -C]``."""
    return window.cat(C, -C) if isinstance(C, Window) else torch.cat([C, -C], 1)


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
    data = C.data if isinstance(C, Window) else C
    b = data.shape[0]
    if b > 1 and data.stride(0) == 0 and (not isinstance(C, Window) or C.oy.shape[0] == 1):
        if isinstance(C, Window):
            neg = -Window(C.data[:1], C.oy, C.ox, C.frame)
            return Window(neg.data.expand(b, *neg.data.shape[1:]), neg.oy, neg.ox, C.frame)
        return (-C[:1]).expand(b, *C.shape[1:])
    return -C


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


def crown(
    graph: BoundGraph,
    region: Bounds,
    C: Tensor | None = None,
    *,
    intermediate: str = "crown",
    bound_upper: bool = True,
    intersect: bool = True,
    in_cone: bool = False,
    windows: bool = True,
) -> tuple[Bounds, dict[int, Bounds]]:
    """CROWN (``intermediate="crown"``) or CROWN-IBP (``"ibp"``) bounds of ``C @ output``.
    ``intersect=False``: no intersection with interval bounds anywhere (auto_LiRPA's CROWN).
    ``in_cone``: intermediate bounds only for the neurons that reach C's rows (the same bounds
    of ``C @ output``; the others keep interval bounds: off where a caller reads them, as
    alpha-CROWN does for its intermediate slopes). ``windows``: as for :func:`refine`."""
    cache: dict = {}
    rows = C if in_cone else None
    bounds = intermediate_bounds(
        graph, region, intermediate, cache=cache, intersect=intersect, C=rows, windows=windows
    )
    lower = region.lower
    out = graph.output
    if C is None:
        shape = graph.nodes[out].shape
        n = math.prod(shape)
        C = identity_rows(shape, torch.arange(n), lower.shape[0], lower)
    C = C.to(lower.dtype)
    if bound_upper:
        final = two_sided(graph, bounds, out, C, cache=cache)
    else:  # lower bounds only (e.g. for certification), half the work
        lb = backward(graph, bounds, out, C, cache=cache)
        final = Bounds(lb, torch.full_like(lb, torch.inf))
    if intersect:
        final = final.intersect(spec_bounds(graph, bounds, C))
    return final, bounds
