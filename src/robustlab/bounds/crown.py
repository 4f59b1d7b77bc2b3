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
from robustlab.bounds.ops.base import InputRegion
from robustlab.bounds.ops.pool import MaxPool
from robustlab.bounds.plan import ACTIVATION, BILINEAR, LINEAR, POOL, cone
from robustlab.bounds.tracker import Tracker, covers
from robustlab.bounds.window import Window

MAX_ELEMENTS = 2**25  # coefficient entries per backward pass; more rows are split into chunks

Alphas = Mapping[int, Tensor]  # activation node -> lower slopes, shape (batch, rows, *shape)


def concretize(A: Tensor, region: Bounds) -> Tensor:
    """Lower bound of ``A . x`` over the input region, shape (batch, rows): ``A c - |A| r`` over
    the box, and for an L2 ball also ``A x0 - eps ||A||_2`` (the larger of the two)."""
    b, m = A.shape[:2]
    Af = A.reshape(b, m, -1)
    c = ((region.upper + region.lower) / 2).reshape(b, -1, 1)
    r = ((region.upper - region.lower) / 2).reshape(b, -1, 1)
    value = (Af @ c - Af.abs() @ r)[..., 0]
    if isinstance(region, InputRegion) and region.l2_eps is not None:
        ball = (Af @ region.center.reshape(b, -1, 1).to(Af.dtype))[
            ..., 0
        ] - region.l2_eps * Af.norm(dim=2)
        value = torch.maximum(value, ball)
    return value


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
    bias = data.new_zeros(C.shape[:2])
    # float32: the pass bounds its own rounding error (tracker.py); its bias is in the tracker
    track = Tracker(graph, bounds, C, target, cache) if rounding.tracked(C) else None
    plan = graph.plan
    kinds, in_shapes, nodes = plan.kinds, plan.in_shapes, graph.nodes
    for i in range(target, 0, -1):
        deadline.check()  # a pass through a huge network can outlast a verifier's timeout
        a = A.pop(i, None)
        if betas is not None and i in betas:
            if track:
                track.start(betas[i], i)
            a = betas[i] if a is None else _dense(a) + betas[i]
            if track and a is not betas[i]:
                track.added(a, i)
        if a is None:
            continue
        if stops is not None and i in stops and i != target and track is None:
            coef, const = substitute(stops[i], _dense(a))
            bias = bias + const
            _accumulate(A, 0, coef.reshape(*coef.shape[:2], *graph.nodes[0].shape), None)
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
                if track is None:
                    return _last_step(op, a, shapes, bounds[0]) + bias
                if getattr(bounds[0], "l2_eps", None) is None:
                    track.linear(op, a, None, node.inputs, node.shape)
                    return track.finish_last(op, a, shapes, data.dtype, CHUNK)
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
            if track:
                track.linear(op, a, ins, node.inputs, node.shape)
            else:
                bias = bias + b
            if len(ins) == 1 and node.inputs[0] not in A:
                A[node.inputs[0]] = ins[0]
            else:
                for j, aj in zip(node.inputs, ins, strict=True):
                    _accumulate(A, j, aj, track)
            continue
        if kind == BILINEAR:
            alpha = alphas.get(i) if alphas else None
            ins, b = op.backward(_dense(a), *[bounds[j] for j in node.inputs], in_shapes[i], alpha)
            bias = bias + b
            for j, aj in zip(node.inputs, ins, strict=True):
                _accumulate(A, j, aj, track)
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
            neg = None
            if isinstance(a, Window):
                a_in, b = window.activation_backward(
                    a, la, lb, ua, None if track else ub, op.zero_lower_intercept
                )
            else:  # a+ la + a- ua, written to touch the (batch, rows, n) coefficients few times
                neg = a.clamp(max=0)
                a_in = a * la
                a_in.addcmul_(neg, gap)  # in place: one (batch, rows, n) allocation fewer
                b = None if track else _rowdot(neg, ub)
                if not (track or op.zero_lower_intercept):
                    b = b + _rowdot(a - neg, lb)
            if track:
                track.activation(i, a, la, lb, ua, ub, j, neg)
            else:
                bias = bias + b
        elif kind == POOL:
            if isinstance(a, Window) and not track and isinstance(op, MaxPool):
                a_in, b = window.pool_backward(op, a, l, u)
            else:
                a = _dense(a)
                a_in, b = op.backward(a, l, u)
            if track:
                track.pool(op, a, j, i)
            else:
                bias = bias + b
        else:
            raise TypeError(f"no backward step for {type(op).__name__} at node '{node.name}'")
        _accumulate(A, j, a_in, track)
    if 0 not in A:  # the target does not depend on the input
        A[0] = data.new_zeros(*C.shape[:2], *graph.nodes[0].shape)
    if track:
        return track.finish(A[0], data.dtype, linear)
    if linear is not None:
        linear["A"], linear["bias"] = _dense(A[0]), bias
    if isinstance(A[0], Window):
        return window.concretize(A[0], bounds[0]) + bias
    return concretize(A[0], bounds[0]) + bias


CHUNK = 2**18  # coefficient entries on the input computed at a time by ``_last_step``


def _last_step(op, a: Tensor, shapes, region: Bounds) -> Tensor:
    """``concretize`` of ``op``'s transpose applied to ``a`` (the step onto the input) plus its
    bias, in chunks of rows small enough to stay in cache: the (batch, rows, *input) coefficients
    are never stored whole. The same numbers as the step followed by ``concretize``."""
    b, m = a.shape[:2]
    if b > 1 and a.stride(0) == 0:  # the same rows for every example: one product
        ins, bias = op.backward(a[:1], shapes)
        return _concretize_shared(ins[0], region) + bias
    n = max(math.prod(shapes[0]), 1)
    per = CHUNK // (m * n)
    if per >= b:
        ins, bias = op.backward(a, shapes)
        return concretize(ins[0], region) + bias
    out = a.new_empty(b, m)
    if per >= 1:
        for s in range(0, b, per):
            ins, bias = op.backward(a[s : s + per], shapes)
            out[s : s + per] = concretize(ins[0], _slice_region(region, slice(s, s + per))) + bias
        return out
    rows = max(1, CHUNK // n)
    for e in range(b):
        one = _slice_region(region, slice(e, e + 1))
        for r in range(0, m, rows):
            ins, bias = op.backward(a[e : e + 1, r : r + rows], shapes)
            out[e : e + 1, r : r + rows] = concretize(ins[0], one) + bias
    return out


def _concretize_shared(A: Tensor, region: Bounds) -> Tensor:
    """``concretize`` of rows (1, rows, *input) shared by every example of the region."""
    b = region.lower.shape[0]
    Af = A.reshape(A.shape[1], -1)
    c = ((region.upper + region.lower) / 2).reshape(b, -1)
    r = ((region.upper - region.lower) / 2).reshape(b, -1)
    value = (c @ Af.T - r @ Af.abs().T).to(A.dtype)
    if isinstance(region, InputRegion) and region.l2_eps is not None:
        ball = region.center.reshape(b, -1).to(A.dtype) @ Af.T - region.l2_eps * Af.norm(dim=1)
        value = torch.maximum(value, ball)
    return value


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


def _accumulate(A: dict, j: int, a: Tensor | Window, track) -> None:
    """``A[j] += a`` (the sum's rounding is tracked in float32 passes)."""
    if j not in A:
        A[j] = a
        return
    A[j] = window.add(A[j], a)
    if track:
        track.added(A[j], j)


def _dense(a: Tensor | Window) -> Tensor:
    return a.dense() if isinstance(a, Window) else a


def _rowdot(x: Tensor, v: Tensor) -> Tensor:
    """``sum(x * v)`` over the trailing dims: x (batch, rows, *s), v (batch, 1 or rows, *s)."""
    xf, vf = x.flatten(2), v.flatten(2)
    if vf.shape[1] == 1 and xf.shape[1] > 1:
        return torch.bmm(xf, vf.expand(xf.shape[0], -1, -1).transpose(1, 2))[..., 0]
    return (xf * vf).sum(-1)


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


def _after_nonlinear(graph: BoundGraph) -> list[bool]:
    """Per node: whether some nonlinear operation lies between the input and it."""
    return list(graph.plan.after_nonlinear)


def identity_rows(shape: tuple[int, ...], idx: Tensor, batch: int, like: Tensor) -> Tensor:
    """Rows of the identity for neurons ``idx`` (flat indices): shape (batch, len(idx), *shape)."""
    n = math.prod(shape)
    rows = torch.zeros(len(idx), n, dtype=like.dtype, device=like.device)
    rows[torch.arange(len(idx)), idx] = 1.0
    return rows.reshape(1, len(idx), *shape).expand(batch, -1, *shape)


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
) -> Bounds:
    """Tighten the bounds of node ``i`` with backward passes (in chunks of rows).

    Rows are the neurons unstable in any example of the batch, or, when each example has far
    fewer than that, each example's own unstable neurons (gathered and padded per example);
    only those in ``within`` (a flat bool mask: ``plan.cone``) when given.
    ``intersect=False`` replaces the interval bounds instead of intersecting with them (as
    auto_LiRPA does; for comparisons only: never tighter). ``stops``: as for :func:`backward`.
    ``windows``: rows on a feature map's neurons kept on their receptive field (window.py).
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
    if intersect and alphas is None and batch > 1 and int(counts.sum()) * 2 < batch * len(idx):
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
    for s in range(0, len(idx), chunk):
        deadline.check()
        part = idx[s : s + chunk]
        if windows and alphas is None and window.usable(shape):
            C = window.identity_windows(shape, part, batch, b.lower)
        else:
            C = identity_rows(shape, part, batch, b.lower)
        nb = two_sided(graph, bounds, i, C, alphas, cache, stops)
        lo[:, part] = torch.maximum(lo[:, part], nb.lower) if intersect else nb.lower
        hi[:, part] = torch.minimum(hi[:, part], nb.upper) if intersect else nb.upper
    return Bounds(lo.reshape(b.lower.shape), hi.reshape(b.upper.shape))


def _refine_rows(graph, bounds, i, sub_mask, group, k, shape, lo, hi, stops=None, windows=True):
    """Backward passes for examples ``group``, rows = each one's first ``k`` masked neurons."""
    per = torch.argsort(sub_mask.to(torch.int8), dim=1, descending=True, stable=True)[:, :k]
    if windows and window.usable(shape):
        C = window.identity_windows(shape, per, len(group), lo)
    else:
        C = torch.zeros(len(group), k, lo.shape[1], dtype=lo.dtype, device=lo.device)
        C = C.scatter_(2, per[:, :, None], 1.0).reshape(len(group), k, *shape)
    part = {
        j: (Bounds(v.lower[group], v.upper[group]) if j else _slice_region(v, group))
        for j, v in bounds.items()
        if j <= i
    }
    sub = None if stops is None else {j: v.take(group) for j, v in stops.items() if j < i}
    nb = two_sided(graph, part, i, C, stops=sub)
    lo[group] = lo[group].scatter_reduce(1, per, nb.lower, "amax")
    hi[group] = hi[group].scatter_reduce(1, per, nb.upper, "amin")


def _slice_region(region: Bounds, sel: Tensor) -> Bounds:
    if isinstance(region, InputRegion):
        center = None if region.center is None else region.center[sel]
        return InputRegion(region.lower[sel], region.upper[sel], center, region.l2_eps)
    return Bounds(region.lower[sel], region.upper[sel])


def linear_bounds(
    graph: BoundGraph, bounds, s: int, stops=None, windows: bool = True, cache: dict | None = None
) -> Lin:
    """Linear bounds of node ``s`` in the input, ``Wl x + bl <= h_s <= Wu x + bu`` on the box,
    from backward passes of its identity rows (each neuron's own CROWN bound, so as tight as
    CROWN's bounds of ``s``); ``bounds`` as for :func:`backward` up to ``s``.

    float32 bounds: the rows run in the rigorous float32 mode, W in float32 and the intercepts
    in float64 with the pass's rounding bound in them (``tracker.Tracker.finish``), so each line
    holds for the exact function at every point of the box.

    Where every node that reads ``s`` is a ReLU (slope 0), a neuron with ``upper <= 0`` (on
    every box) reaches no later row (its coefficient there is 0): it gets the constant lines
    of its interval bounds, and no rows. The upper lines come first, and a neuron they show
    dead gets no lower row (on cGAN cut nodes, 45-65% of the neurons: half the rows).
    ``cache``: as for :func:`backward` (one for every chunk of rows when not given)."""
    cache = {} if cache is None else cache
    shape = graph.nodes[s].shape
    n, k = math.prod(shape), math.prod(graph.nodes[0].shape)
    region = bounds[0]
    batch = region.lower.shape[0]
    lo = bounds[s].lower.reshape(batch, n)
    hi = bounds[s].upper.reshape(batch, n)
    wide = torch.float64 if rounding.tracked(region.lower) else region.lower.dtype
    # the constant lines lo <= h <= hi (exact in float64), replaced by each row computed
    wl = region.lower.new_zeros(batch, n, k)
    wu = torch.zeros_like(wl)
    bl, bu = lo.to(wide).clone(), hi.to(wide).clone()
    finite = torch.isfinite(lo) & torch.isfinite(hi)
    live = ((hi > 0) | ~finite).any(0) if _zero_when_dead(graph, s) else lo.new_ones(n).bool()
    chunk = max(1, MAX_ELEMENTS // (batch * graph.plan.numel_upto[s]))  # one sign per pass
    c = ((region.upper + region.lower) / 2).reshape(batch, -1).to(wide)
    r = ((region.upper - region.lower) / 2).reshape(batch, -1).to(wide)
    for sign in (-1, 1):  # upper lines (rows -e_q) first
        idx = live.nonzero().squeeze(1)
        for st in range(0, len(idx), chunk):
            deadline.check()
            part = idx[st : st + chunk]
            if windows and window.usable(shape):
                C = window.identity_windows(shape, part, batch, region.lower)
            else:
                C = identity_rows(shape, part, batch, region.lower)
            lin: dict = {}
            backward(graph, bounds, s, -C if sign < 0 else C, cache=cache, stops=stops, linear=lin)
            A, b = lin["A"].reshape(batch, len(part), k), lin["bias"].to(wide)
            if sign > 0:
                wl[:, part], bl[:, part] = A, b
            else:
                wu[:, part], bu[:, part] = -A, -b
        if sign < 0 and not bool(live.all()):  # dead by the upper lines: no lower rows
            up = (wu.to(wide) * c[:, None]).sum(-1) + (wu.to(wide).abs() * r[:, None]).sum(-1)
            live = live & ((up + bu > 0) | ~finite).any(0)
    return Lin(
        wl.reshape(batch, *shape, k),
        bl.reshape(batch, *shape),
        wu.reshape(batch, *shape, k),
        bu.reshape(batch, *shape),
    )


def _zero_when_dead(graph: BoundGraph, s: int) -> bool:
    """Whether every node that reads node ``s`` is a ReLU of slope 0 (a neuron of ``s`` with
    ``upper <= 0`` then reaches every later row with coefficient 0)."""
    readers = [node.op for node in graph.nodes[s + 1 :] if s in node.inputs]
    return bool(readers) and all(isinstance(op, ReLU) and op.slope == 0 for op in readers)


def intermediate_bounds(
    graph: BoundGraph,
    region: Bounds,
    method: str = "crown",
    prior: Mapping[int, Bounds] | None = None,
    cache: dict | None = None,
    intersect: bool = True,
    C: Tensor | None = None,
    cut: int | None = None,
    cut_lin: Lin | None = None,
    windows: bool = True,
    cut_float32: bool = False,
    lines: dict | None = None,
) -> dict[int, Bounds]:
    """Bounds of every node: interval bounds, tightened by CROWN where a relaxation uses them;
    with ``C`` (the rows the bounds are for, (batch, rows, *output shape)) only the neurons in
    their cone (``plan.cone``): the others keep interval bounds, which these rows never read.

    ``cut`` (a node every later node depends on only through it, ``plan.narrow_cut``): its
    linear bounds in the input come from its own backward rows (:func:`linear_bounds`), and
    the rows of every later node end there (mixed mode): each row crosses the network before
    the cut once per neuron of the cut instead of once per row. Looser than rows that go on to
    the input (a cut node's relaxations are chosen per neuron, not per row), far cheaper when
    the cut is narrow and what lies before it costly (a GAN's generator output).

    ``cut_float32`` (a float64 box region): the nodes up to the cut, and the cut's lines, in
    the rigorous float32 mode (tracker.py: the box rounded outward, every bound and line
    bounding its own rounding), the rest in float64 from exact float64 copies of them (on
    cGAN the cut's lines are 80-90% of the work, and float32 products are ~2x faster there).

    ``cut_lin``: the cut's lines, valid on the region (those of a box containing it, cut.py);
    the nodes up to the cut then keep their interval bounds intersected with ``prior`` (which
    carries that box's), and only later nodes are refined. ``lines`` receives the cut's lines
    (float64) under the key ``cut``."""
    need = graph.plan.needs if method == "crown" else {}
    cache = {} if cache is None else cache  # references and relaxations shared by the chunks
    exact = graph.plan.ibp_exact
    within = cone(graph, graph.output, C) if C is not None and need else {}
    f32 = (
        cut_float32
        and cut is not None
        and cut_lin is None
        and method == "crown"
        and region.lower.dtype == torch.float64
        and getattr(region, "l2_eps", None) is None
        and covers(graph)
    )
    bounds: dict[int, Bounds] = {0: _outward_region(region) if f32 else region}
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
        if i == cut and method == "crown":
            stops = {
                i: linear_bounds(graph, bounds, i, windows=windows, cache=cache)
                if cut_lin is None
                else cut_lin
            }
            if f32:  # on from here in float64: exact copies of the float32 bounds and lines
                bounds = {j: rounding.upcast(v) for j, v in bounds.items()}
                bounds[0] = region
                b = bounds[i]
                stops = {i: _upcast_lin(stops[i])}
            if lines is not None:
                lines[i] = stops[i]
            c = ((region.upper + region.lower) / 2).reshape(len(region.lower), -1)
            r = ((region.upper - region.lower) / 2).reshape(len(region.lower), -1)
            bounds[i] = b.intersect(stops[i].concrete(c, r))
        if cut_lin is not None and cut is not None and i <= cut:
            continue  # the given lines' box refined these (they reach ``prior``)
        if i == cut and method == "crown":
            continue  # the cut's lines over the region are its neurons' CROWN bounds already
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


def _outward_region(region: Bounds) -> InputRegion:
    """A float64 box rounded outward to float32."""
    b = rounding.outward(region, torch.float32)
    return InputRegion(b.lower, b.upper)


def _upcast_lin(lin: Lin) -> Lin:
    """Float32 lines in float64 (exact: W is float32, the intercepts float64 already)."""
    return Lin(lin.wl.double(), lin.bl.double(), lin.wu.double(), lin.bu.double())


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
