"""Branch and bound by input splitting (for networks with few inputs, such as ACAS Xu): batched
CROWN bounds on many sub-boxes at once; each undecided box is split in two along the input whose
contribution to the bound is largest (|coefficient| x width, as in "smart" input splitting)."""

from __future__ import annotations

import math
import time
from collections.abc import Generator
from dataclasses import dataclass

import torch
from torch import Tensor

from robustlab.bounds.alpha import alpha_crown
from robustlab.bounds.backward import backward
from robustlab.bounds.cut import CutPasses, convolutional, mixed_bounds
from robustlab.bounds.forward import affordable as forward_affordable
from robustlab.bounds.forward import forward_bounds
from robustlab.bounds.forward import supported as forward_ok
from robustlab.bounds.graph import BoundGraph
from robustlab.bounds.intermediate import intermediate_bounds
from robustlab.bounds.ops.base import Bounds, InputRegion
from robustlab.bounds.plan import cut_node, float32_pays
from robustlab.deadline import current
from robustlab.verify.cost import mixed_pays
from robustlab.verify.leaf_lp import LeafCheck, relu_chain
from robustlab.verify.spec import Property

HOLD_ULPS = 16  # the margin of a `holds`, in units of the input precision (see hold_margin)
UNIT = 2.0**-24  # the precision networks are evaluated in (float32, as onnxruntime checks them)
PARENT_BOUNDS_MAX = 4096  # neurons whose bounds a queued box keeps for its children (memory)
SPLIT_FLOOR = 0.05  # look-ahead: inputs whose smart score is below this share of the best's
ALPHA_STEPS = 10  # alpha-CROWN's steps on the rows of the look-ahead's open children
LEAF_SHARE = 4.0  # the LP leaf check's time against the bound passes' (leaf_lp.LeafCheck)
# search_steps' margins: each box's own (hold_margin's formula on the box) where smaller than the
# root box's. The root's CROWN bounds of the outputs are loose (ACAS Xu 4_2: |y| <= 558 where
# samples reach 0.033), so its margin (0.0018) exceeded the property's true gap (0.0011 on
# 4_2 / prop_2, 0.0009 on 3_3 / prop_2): no search could prove them
BOX_MARGIN = True


# the cut's pass of each box bounded in the mixed mode, for the boxes inside it (bounds/cut.py)


@dataclass
class BabStats:
    domains: int = 0
    max_queue: int = 0
    bound_calls: int = 0
    open_fraction: float = 1.0  # of the root box's volume (over its free inputs), still open
    lp_calls: int = 0  # LP leaf checks (leaf_lp), and the boxes they closed
    lp_closed: int = 0
    alpha_closed: int = 0  # boxes closed by alpha-CROWN's slopes on the last rows


def _stack_spec(prop: Property) -> tuple[Tensor, Tensor, list[slice]]:
    rows, rhs, groups, k = [], [], [], 0
    for dj in prop.disjuncts:
        rows.append(dj.C)
        rhs.append(dj.d)
        groups.append(slice(k, k + len(dj.d)))
        k += len(dj.d)
    return torch.cat(rows), torch.cat(rhs), groups


def bound_boxes(
    graph: BoundGraph,
    lo: Tensor,
    hi: Tensor,
    C: Tensor,
    shape,
    intermediate: str = "crown",
    parent: Tensor | None = None,
    keep: list | None = None,
    forward_prior: bool = False,
    out: dict | None = None,
    passes: CutPasses | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """CROWN lower bounds of ``C y`` on each box (N, rows), with the linear lower bounds they come
    from: ``C y >= A x + bias`` on the box (A of shape (N, rows, n_inputs)). ``C``: (rows,
    n_outputs) for every box, or (N, rows, n_outputs) one per box.

    Intermediate bounds: ``"crown"`` (backward passes for every unstable neuron, after forward
    linear bounds) or ``"forward"`` (forward linear bounds only: far cheaper, far looser).
    ``parent``: bounds (N, 2, S) of the nodes a relaxation uses (:func:`pack_bounds`) valid on
    a box containing each box (its parent in a split), intersected with the box's own before
    the unstable neurons are chosen: fewer rows, tighter relaxations; forward linear bounds
    are then skipped unless ``forward_prior`` (on ACAS Xu they prune nothing the parent's CROWN
    bounds do not). ``keep``: a list that receives the box's own packed bounds (for its
    children); ``out``: a dict that receives every node's bounds (for later passes).
    ``passes`` (``root.RootCache.cut_passes``): the mixed mode's passes of boxes bounded
    before, which boxes inside them take (convolutional nets), and which keep this one's."""
    n = len(lo)
    region = InputRegion(lo.reshape(n, *shape), hi.reshape(n, *shape))
    unkept = parent is not None and parent.shape[2] == 0
    if unkept:
        parent = None  # not kept (pack_bounds, or search_steps' reuse_parent): nor for children
    with torch.no_grad():
        Cn = C.expand(n, *C.shape) if C.dim() == 2 else C
        Cn = Cn.reshape(n, Cn.shape[1], *graph.nodes[graph.output].shape).to(lo.dtype)
        if intermediate == "forward" and forward_ok(graph):
            bounds = forward_bounds(graph, region)
            if parent is not None:
                bounds = {**bounds, **_intersect(graph, bounds, parent)}
            cut = cut_node(graph) if lo.dtype == torch.float64 else None
            cut = cut if cut is not None and mixed_pays(graph, cut) else None
            if cut is not None:  # rows that end at the waist's linear bounds (mixed mode)
                # the prefix and the cut's lines in the rigorous float32 mode where it pays;
                # boxes inside a box bounded before take its pass (convolutional nets: cGAN)
                conv = convolutional(graph)
                f32 = conv and float32_pays(graph, n)
                kept = passes if conv else None
                bounds = mixed_bounds(graph, region, bounds, Cn, cut, f32, kept)
        else:
            prior = None
            # forward bounds round to nearest: a prior only for float64 boxes (float32 passes
            # bound their own rounding, tracker.py)
            cheap = lo.dtype == torch.float64 and forward_ok(graph) and forward_affordable(graph)
            if (parent is None or forward_prior) and cheap:
                prior = forward_bounds(graph, region)
            if parent is not None:
                prior = {**(prior or {}), **_intersect(graph, prior or {}, parent)}
            # only the neurons that reach the rows (the same bounds of C y, fewer passes)
            bounds = intermediate_bounds(graph, region, "crown", prior=prior, C=Cn)
        if keep is not None:
            keep.append(region.lower.new_zeros(n, 2, 0) if unkept else pack_bounds(graph, bounds))
        if out is not None:
            out.update(bounds)
        lin: dict = {}
        lb = backward(graph, bounds, graph.output, Cn, linear=lin)
    return lb, lin["A"].reshape(n, Cn.shape[1], -1), lin["bias"]


def _keeps_bounds(graph: BoundGraph) -> bool:
    """Whether :func:`pack_bounds` keeps anything: the nodes a relaxation uses have at most
    ``PARENT_BOUNDS_MAX`` neurons, and some."""
    size = sum(math.prod(graph.nodes[j].shape) for j in graph.plan.needs)
    return 0 < size <= PARENT_BOUNDS_MAX


def pack_bounds(graph: BoundGraph, bounds) -> Tensor:
    """The bounds of the nodes a relaxation uses, as one tensor (N, 2, S); S = 0 (nothing
    kept) when they have more than ``PARENT_BOUNDS_MAX`` neurons."""
    n = len(bounds[0].lower)
    if not _keeps_bounds(graph):  # nothing to keep (a purely linear network), or too much
        return bounds[0].lower.new_zeros(n, 2, 0)
    parts = [
        torch.stack([bounds[j].lower, bounds[j].upper], 1).flatten(2)
        for j in sorted(graph.plan.needs)
    ]
    return torch.cat(parts, 2)


def _intersect(graph: BoundGraph, bounds, packed: Tensor) -> dict:
    """The bounds of the nodes a relaxation uses in ``bounds`` (all when absent) intersected
    with the packed ``packed`` (:func:`pack_bounds`)."""
    out, k = {}, 0
    n = len(packed)
    for j in sorted(graph.plan.needs):
        shape = graph.nodes[j].shape
        size = math.prod(shape)
        lo = packed[:, 0, k : k + size].reshape(n, *shape)
        hi = packed[:, 1, k : k + size].reshape(n, *shape)
        k += size
        own = bounds.get(j)
        out[j] = Bounds(lo, hi) if own is None else own.intersect(Bounds(lo, hi))
    return out


def margin_of(d: Tensor, magnitude: Tensor | float = 0.0, unit: float = UNIT) -> Tensor:
    """``HOLD_ULPS * unit * (|d| + magnitude)``, per row (see :func:`hold_margin`)."""
    return HOLD_ULPS * unit * (d.abs() + magnitude)


def hold_margin(
    graph: BoundGraph,
    prop: Property,
    shape,
    unit: float = UNIT,
    intermediate: str = "crown",
    cache=None,
) -> Tensor:
    """How far a lower bound of each row ``C_r y`` (the property's stacked rows) must clear
    ``d_r`` before a disjunct counts as unreachable: ``HOLD_ULPS`` units of the input precision
    ``unit`` of the bounded quantity's magnitude, ``|d_r| + |C_r| max|y| + |A_r| max|x|`` over
    the property's box (CROWN bounds of the outputs y; A_r: the coefficients of C_r y's linear
    bound, its sensitivity to the inputs). The two magnitude terms are what rounding the outputs
    and the inputs to float32 can change, so no float32 evaluation contradicts a ``holds``; the
    margin follows the network's scale (outputs near 1e6 or near 1e-6 alike). ``intermediate``:
    as for :func:`bound_boxes`; ``cache``: as for :func:`bounds_and_margins`."""
    C, d, _ = _stack_spec(prop)
    lo, hi = prop.lower[None].double(), prop.upper[None].double()
    lb, margin = bounds_and_margins(
        graph, lo, hi, C[None], d[None], shape, intermediate, unit, cache=cache
    )
    return margin[0]


def bounds_and_margins(
    graph: BoundGraph,
    lo: Tensor,
    hi: Tensor,
    C: Tensor,
    d: Tensor,
    shape,
    intermediate: str = "crown",
    unit: float = UNIT,
    out: dict | None = None,
    cache=None,
) -> tuple[Tensor, Tensor]:
    """For N boxes with their own rows ``C`` (N, rows, n_outputs) and ``d`` (N, rows): the lower
    bounds of ``C y`` (N, rows) and the margins of :func:`hold_margin` (N, rows), from one bound
    pass (the rows and the outputs' two signs bounded together); ``out``: as for
    :func:`bound_boxes`. ``cache`` (a ``root.RootCache``): a one-box pass (without ``out``) is
    taken from its last one-box pass where that was on the same function, box, rows and
    intermediate bounds, and kept there otherwise (the engine's first bound pass, hold_margin's
    and the search's root are one pass, on the reduced graphs of input splitting too)."""
    n, k, n_out = C.shape
    rows, used = output_rows(C)
    # one region's box: the engine's pass, then hold_margin's, then the search's (a caller
    # that wants the bounds makes its own pass)
    cached = cache is not None and n == 1 and out is None
    hit = cache.last(graph, lo, hi, rows, intermediate) if cached else None
    if hit is None:
        passes = None if cache is None else cache.cut_passes
        lb, A, bias = bound_boxes(graph, lo, hi, rows, shape, intermediate, out=out, passes=passes)
        if cached:
            cache.put_last(graph, lo, hi, rows, intermediate, (lb, A, bias))
    else:
        lb, A, bias = hit
    return lb[:, :k].double(), box_margins(lb, A, C, d, lo, hi, used, unit)


def output_rows(C: Tensor) -> tuple[Tensor, Tensor]:
    """``C`` (N, rows, n_outputs) with the identity's rows and their negations for the outputs
    some row reads (``used``) appended: one pass bounds the rows and those outputs' magnitudes
    (TinyYOLO: 5 rows of 42,250, not 42,250^2)."""
    n, _, n_out = C.shape
    used = (C != 0).any(1).any(0).nonzero().squeeze(1)  # the outputs some row reads
    u = len(used)
    eye = C.new_zeros(u, n_out).index_put_((torch.arange(u), used), C.new_ones(()))
    eye = eye.expand(n, u, n_out)
    return torch.cat([C, eye, -eye], 1), used


def box_margins(lb, A, C, d, lo, hi, used, unit: float = UNIT) -> Tensor:
    """The margins of :func:`hold_margin` (N, rows) on each of N boxes from one pass over the
    rows of :func:`output_rows` (``lb``, ``A``: its lower bounds and input coefficients): the
    outputs' magnitudes and the rows' sensitivities to the inputs on the box itself. ``C``:
    (rows, n_outputs) or (N, rows, n_outputs); ``d``: (rows,) or (N, rows)."""
    n, k, u = len(lb), C.shape[-2], len(used)
    lb, A = lb.double(), A.double()  # a float32 pass's bounds are exact in float64
    y_mag = torch.maximum(lb[:, k : k + u].abs(), lb[:, k + u :].abs())
    x_mag = torch.maximum(lo.abs(), hi.abs()).reshape(n, -1).to(A.dtype)
    Cu = C[..., used].abs().to(y_mag.dtype).expand(n, k, u)
    mag = torch.einsum("nko,no->nk", Cu, y_mag)
    mag = mag + torch.einsum("nki,ni->nk", A[:, :k].abs(), x_mag)
    return margin_of(d, mag, unit)


def pop_domains(stack: list, batch: int):
    """Up to ``batch`` domains from the top of a stack of domain batches (depth first: few open
    domains); a batch type has ``len``, ``take(index)`` and ``cat(batches)``."""
    parts, need = [], batch
    while stack and need:
        top = stack[-1]
        if len(top) <= need:
            parts.append(stack.pop())
        else:
            parts.append(top.take(slice(len(top) - need, None)))
            stack[-1] = top.take(slice(0, len(top) - need))
        need -= len(parts[-1])
    return parts[0] if len(parts) == 1 else type(parts[0]).cat(parts)


def _weights(k: int) -> Tensor:
    """Convex combinations of k rows tried for a conjunction: weights in {0, 1, 2}, normalised."""
    grid = torch.cartesian_prod(*[torch.arange(3.0, dtype=torch.float64)] * k).reshape(-1, k)
    grid = grid[(grid > 0).sum(1) > 1]
    return grid / grid.sum(1, keepdim=True)


def disjunct_slack(
    lb, A, bias, lo, hi, d, groups, margin: Tensor | None = None, steps: int = 20
) -> Tensor:
    """(N, disjuncts): a lower bound on the largest ``C_r y - d_r`` over each disjunct's rows,
    minus the margin (:func:`hold_margin`; default: from |d| alone); positive means the
    disjunct is unreachable on the box.

    A conjunction is also refuted by a convex combination of its rows whose linear lower bound is
    positive over the whole box (even when no single row is): a grid of weights for up to 6
    rows, then ``steps`` steps of :func:`_combined` on the boxes still open."""
    margin = margin_of(d) if margin is None else margin
    slack = lb - d - margin
    c, r = (hi + lo) / 2, (hi - lo) / 2
    out = []
    for g in groups:
        best = slack[:, g].amax(1)
        k = g.stop - g.start
        if 1 < k <= 6:
            w = _weights(k).to(lb.dtype)  # (W, k)
            coef = torch.einsum("wk,nki->nwi", w, A[:, g])
            const = (bias[:, g] - d[g] - margin[..., g]) @ w.T  # (N, W)
            val = (coef * c[:, None]).sum(-1) - (coef.abs() * r[:, None]).sum(-1) + const
            best = torch.maximum(best, val.amax(1))
        if k > 1 and (best <= 0).any():
            todo = (best <= 0).nonzero().squeeze(1)
            mg = margin[..., g]
            const = bias[todo][:, g] - d[g] - (mg[todo] if mg.dim() > 1 else mg)
            val = _combined(A[todo][:, g], const, c[todo], r[todo], steps)
            best[todo] = torch.maximum(best[todo], val)
        out.append(best)
    return torch.stack(out, 1)


def _combined(A: Tensor, const: Tensor, c: Tensor, r: Tensor, steps: int) -> Tensor:
    """Per box, the best lower bound over the box of ``sum_r w_r (A_r x + const_r)`` found for
    weights ``w`` on the simplex (N, k rows) by exponentiated supergradient ascent (the dual of
    the linear program "some x in the box meets every row's bound"): every iterate's value is a
    valid bound, the best is kept. At its optimum it is the exact LP answer."""
    n, k, _ = A.shape
    w = torch.full((n, k), 1.0 / k, dtype=A.dtype)
    best = torch.full((n,), -torch.inf, dtype=A.dtype)
    scale = (A.abs() @ r[..., None])[..., 0].amax(1) + const.abs().amax(1) + 1e-300
    for t in range(steps):
        coef = torch.einsum("nk,nki->ni", w, A)
        x = c - r * torch.sign(coef)  # the box's minimising corner
        per = torch.einsum("nki,ni->nk", A, x) + const  # supergradient: each row at x
        best = torch.maximum(best, (w * per).sum(1))
        w = w * torch.exp(per / scale[:, None] * (2.0 / (1 + t) ** 0.5))
        w = w / w.sum(1, keepdim=True)
    return best


def infeasible(lb: Tensor, d: Tensor, groups: list[slice], margin: Tensor | None = None) -> Tensor:
    """(N, disjuncts): disjunct proven unreachable on the box (some row's bound exceeds d by the
    margin, :func:`hold_margin`; default: from |d| alone)."""
    margin = margin_of(d) if margin is None else margin
    ok = lb > d + margin
    return torch.stack([ok[:, g].any(1) for g in groups], 1)


def refuted_rows(lb: Tensor, d: Tensor, margin: Tensor | None = None) -> Tensor:
    """Per row of ``lb`` (N, rows): whether its lower bound refutes ``C_r y <= d_r`` by the
    margin (:func:`hold_margin`, or its batched form :func:`margins`; default: from |d| alone);
    ``d`` and ``margin`` have shape (rows,) or (N, rows)."""
    rows = lb.shape[-1]
    if rows == 0:
        return torch.zeros(lb.shape, dtype=torch.bool)
    return infeasible(lb, d, [slice(i, i + 1) for i in range(rows)], margin)


def input_split(
    graph: BoundGraph,
    prop: Property,
    shape: tuple[int, ...],
    model,
    *,
    deadline: float,
    batch: int = 512,
    stats: BabStats | None = None,
    intermediate: str = "crown",
    lookahead: int = 2,
    weakest_first: bool = False,
    cache=None,
) -> tuple[str, Tensor | None]:
    """``("holds", None)``, ``("violated", x)`` (x float64, to be re-checked), or
    ``("timeout", None)``: one search of :func:`search_steps` run to the deadline."""
    return portfolio(
        [
            search_steps(
                graph,
                prop,
                shape,
                model,
                batch=batch,
                stats=stats,
                intermediate=intermediate,
                lookahead=lookahead,
                weakest_first=weakest_first,
                cache=cache,
            )
        ],
        deadline,
    )


def portfolio(
    searches: list, deadline: float, shares: list[float] | None = None, side=None
) -> tuple[str, Tensor | None]:
    """Run several searches (generators from :func:`search_steps`) with the given shares of time
    (equal by default; the one furthest below its share takes the next step) until one answers
    or the deadline passes. ``side(spent, now, deadline)``, called before every step with the
    searches' summed time: ``(ran, answer)``, where ``ran`` means it took a turn of its own
    instead (e.g. a falsifier's share: ``falsify.Falsifier.beside``) and ``answer`` ends the run
    when not None."""
    shares = shares or [1.0] * len(searches)
    used = [0.0] * len(searches)
    while searches:
        now = time.monotonic()
        if now > deadline:
            return "timeout", None
        if side is not None:
            ran, answer = side(sum(used), now, deadline)
            if answer is not None:
                return answer
            if ran:
                continue
        k = min(range(len(searches)), key=lambda i: used[i] / shares[i])
        try:
            next(searches[k])
        except StopIteration as stop:
            return stop.value
        used[k] += time.monotonic() - now
    return "timeout", None


def search_steps(
    graph: BoundGraph,
    prop: Property,
    shape: tuple[int, ...],
    model,
    *,
    batch: int = 512,
    stats: BabStats | None = None,
    intermediate: str = "crown",
    lookahead: int = 2,
    weakest_first: bool = False,
    split_all: bool = False,
    margin: Tensor | None = None,
    reuse_parent: bool = True,
    cache=None,
    leaf_share: float | None = None,
    box_margin: bool | None = None,
) -> Generator[None, None, tuple[str, Tensor | None]]:
    """Input-splitting branch and bound, one batch of boxes per step (a generator that returns
    ``("holds", None)`` or ``("violated", x)``).

    Branching looks ahead: every undecided box is bounded split in two along each of the
    ``lookahead`` inputs with the largest |coefficient| x width, and the split whose worse half has
    the best bound is taken; halves already proven are dropped. The coefficients are those of the
    row closest to refuting the weakest open disjunct, or (``weakest_first``) of the weakest open
    row; with ``lookahead >= 2`` the candidates alternate between the two. With ``split_all``
    (for two or three inputs that vary) every box is split along all of them at once and every
    child is kept: the bounds of the look-ahead's discarded halves are not wasted. ``margin``:
    that of :func:`hold_margin` (computed when not given); with ``box_margin`` (default
    ``BOX_MARGIN``) each box takes the same formula on its own bounds where smaller (the
    outputs' rows ride along in every pass). ``reuse_parent``: children start
    from their parent's intermediate bounds (:func:`bound_boxes`' ``parent``); CROWN is not
    monotone in its intermediate bounds (the adaptive ReLU lower slopes), so this proves some
    properties far sooner (ACAS Xu 4_9 / prop_1) and others later (1_1 / prop_5). ``cache``
    (a ``root.RootCache``): the root box's bounds come from its last one-box pass where that
    was hold_margin's on the same function, box and rows (:func:`bounds_and_margins`).
    ``leaf_share`` (default ``LEAF_SHARE``): the look-ahead's children still open get
    alpha-CROWN's slopes on the rows (:func:`_alpha_close`), then the exact LP of their
    triangle relaxation (:class:`leaf_lp.LeafCheck`; ReLU chains whose boxes keep their
    bounds) with this share of the time against the bound passes (0: neither)."""
    stats = stats or BabStats()
    C, d, groups = _stack_spec(prop)
    if margin is None:
        margin = hold_margin(graph, prop, shape, intermediate=intermediate, cache=cache)
    leaf_share = LEAF_SHARE if leaf_share is None else leaf_share
    box_margin = BOX_MARGIN if box_margin is None else box_margin
    leaf = _leaf_check(graph, C, d, groups, leaf_share if reuse_parent else 0.0)
    lo_q, hi_q = prop.lower[None].clone(), prop.upper[None].clone()
    kept: list = []
    passes = None if cache is None else cache.cut_passes
    rows_all, used = output_rows(C[None])  # the rows, and the outputs' magnitudes per box
    rows_all = rows_all[0] if box_margin else C

    def rows_and_margins(lb, A, bias, lo, hi):
        """The property's rows of a pass over ``rows_all``, and each box's margins: its own
        (:func:`box_margins`) where smaller than the root box's."""
        k = len(d)
        own = box_margins(lb, A, C, d, lo, hi, used) if box_margin else margin
        return lb[:, :k], A[:, :k], bias[:, :k], torch.minimum(own, margin)

    root = None if cache is None else cache.last(graph, lo_q, hi_q, rows_all, intermediate, True)
    if root is not None and not (reuse_parent and _keeps_bounds(graph)):
        lb, A, bias = root
        kept.append(lo_q.new_zeros(1, 2, 0))
    else:
        lb, A, bias = bound_boxes(
            graph, lo_q, hi_q, rows_all, shape, intermediate, keep=kept, passes=passes
        )
    lb, A, bias, mg = rows_and_margins(lb, A, bias, lo_q, hi_q)
    pb_q = kept[0]  # per box: its parent's intermediate bounds (packed)
    if not reuse_parent:
        pb_q = pb_q[..., :0]  # nothing kept
    stats.domains += 1
    # per box: its open disjuncts
    open_q = ~(disjunct_slack(lb, A, bias, lo_q, hi_q, d, groups, mg) > 0)
    a_q = _rows_to_improve(lb, A, open_q, d, groups, weakest_first)  # per box: (2, inputs)
    if not open_q.any():
        return "holds", None
    free = (hi_q[0] > lo_q[0]).nonzero().squeeze(1)
    root = (hi_q[0, free] - lo_q[0, free]).log().sum()
    while len(lo_q):
        stats.open_fraction = float(((hi_q - lo_q)[:, free].log().sum(1) - root).exp().sum())
        yield
        t_step = time.process_time()
        lo, hi, op, a = lo_q[:batch], hi_q[:batch], open_q[:batch], a_q[:batch]
        lo_q, hi_q, open_q, a_q = lo_q[batch:], hi_q[batch:], open_q[batch:], a_q[batch:]
        pb, pb_q = pb_q[:batch], pb_q[batch:]
        n, k_in = lo.shape
        # search: box centres and the corners minimising each box's weakest bound
        cand = torch.cat([torch.where(a[:, 0] > 0, lo, hi), torch.where(a[:, 1] > 0, lo, hi)])
        cand = torch.cat([cand, (lo + hi) / 2])
        with torch.no_grad():
            y = model(cand.float().reshape(-1, *shape)).reshape(len(cand), -1)
        v = prop.violation(y)
        if (v <= 0).any():
            return "violated", cand[v.argmin()]
        if split_all:
            L, H, child_open, lb_c, A_c, pb_c = _split_all(
                graph,
                lo,
                hi,
                op,
                rows_all,
                rows_and_margins,
                d,
                groups,
                shape,
                intermediate,
                pb,
                passes,
            )
            stats.domains += len(L)
            stats.bound_calls += 1
            keep = child_open.any(1)
            lo_q, hi_q = torch.cat([L[keep], lo_q]), torch.cat([H[keep], hi_q])
            pb_q = torch.cat([pb_c[keep], pb_q])
            open_q = torch.cat([child_open[keep], open_q])
            improve = _rows_to_improve(lb_c[keep], A_c[keep], child_open[keep], d, groups)
            a_q = torch.cat([improve, a_q])
            stats.max_queue = max(stats.max_queue, len(lo_q))
            continue
        # look ahead: both halves along the `lookahead` inputs with the largest |coefficient| x
        # width (the "smart" score), bounded in one batch
        m = min(lookahead, k_in)
        smart = a.abs() * (hi - lo)[:, None]
        cands = _candidates(smart, m)  # (n, m)
        mids = (lo + hi) / 2
        los, his = [], []
        for j in range(m):
            k = cands[:, j : j + 1]
            h1 = hi.clone().scatter_(1, k, mids.gather(1, k))
            l2 = lo.clone().scatter_(1, k, mids.gather(1, k))
            los += [lo, l2]
            his += [h1, hi]
        L, H = torch.cat(los), torch.cat(his)
        stats.domains += len(L)
        stats.bound_calls += 1
        kept = []
        parent = pb.repeat(2 * m, 1, 1)
        every: dict | None = {} if leaf is not None else None  # every node's bounds, for alpha
        lbc, Ac, bc = bound_boxes(
            graph, L, H, rows_all, shape, intermediate, parent, kept, out=every, passes=passes
        )
        lbc, Ac, bc, mgc = rows_and_margins(lbc, Ac, bc, L, H)
        sl = disjunct_slack(lbc, Ac, bc, L, H, d, groups, mgc).view(m, 2, n, -1)
        sl = torch.where(op[None, None], sl, torch.inf)  # closed disjuncts do not matter
        score = sl.amin(3).amin(1)  # (m, n): the worse half's weakest open disjunct
        # only inputs whose "smart" score is not negligible: halving an input already narrow
        # mostly re-bounds the box from its own bounds (CROWN is not monotone in them), a tiny
        # gain that won the look-ahead again and again (ACAS Xu 4_2 / prop_2: X_0 halved to
        # width 1e-7 while X_2 stayed 0.125)
        smart = smart.amax(1)
        worth = smart.gather(1, cands) >= SPLIT_FLOOR * smart.amax(1, keepdim=True)
        score = torch.where(worth.T, score, -torch.inf)
        dim = score.argmax(0)
        pick = torch.arange(n)
        child_open = op[None] & ~(sl[dim, :, pick] > 0).transpose(0, 1)  # (2, n, disjuncts)
        rows = C.shape[0]
        lb_c = lbc.view(m, 2, n, rows)[dim, :, pick].transpose(0, 1)
        A_c = Ac.view(m, 2, n, rows, k_in)[dim, :, pick].transpose(0, 1)
        L = L.view(m, 2, n, k_in)[dim, :, pick].transpose(0, 1)
        H = H.view(m, 2, n, k_in)[dim, :, pick].transpose(0, 1)
        P = kept[0].view(m, 2, n, *kept[0].shape[1:])[dim, :, pick].transpose(0, 1)
        keep = child_open.any(2)
        if leaf is not None and keep.any():  # alpha, then the LP, on the children still open
            mg_c = mgc.view(m, 2, n, rows)[dim, :, pick].transpose(0, 1)
            flat = dim * 2 * n + torch.arange(2)[:, None] * n + pick  # (2, n): their passes
            child_open[keep], sl_c = _alpha_close(
                graph,
                every,
                flat[keep],
                L[keep],
                H[keep],
                C,
                d,
                groups,
                mg_c[keep],
                child_open[keep],
                shape,
            )
            stats.alpha_closed += int((~child_open[keep].any(1)).sum())
            keep_a = keep.clone()
            keep = child_open.any(2)
            sl_c = sl_c[keep[keep_a]]
        if leaf is not None and keep.any():
            child_open[keep] = leaf.close(
                L[keep],
                H[keep],
                P[keep],
                child_open[keep],
                sl_c,
                mg_c[keep],
                time.process_time() - t_step,
            )
            stats.lp_calls, stats.lp_closed = leaf.calls, leaf.closed
            keep = child_open.any(2)
        pb_q = torch.cat([P[keep], pb_q])
        lo_q = torch.cat([L[keep], lo_q])
        hi_q = torch.cat([H[keep], hi_q])
        open_q = torch.cat([child_open[keep], open_q])
        a_q = torch.cat(
            [
                _rows_to_improve(lb_c[keep], A_c[keep], child_open[keep], d, groups, weakest_first),
                a_q,
            ]
        )
        stats.max_queue = max(stats.max_queue, len(lo_q))
    return "holds", None


def _alpha_close(graph, every, sel, lo, hi, C, d, groups, margin, open_, shape):
    """``open_`` (N, disjuncts) less the disjuncts that alpha-CROWN's slopes refute on the
    boxes (the rows ``C`` only; the intermediate bounds are those of the pass ``every``, boxes
    ``sel`` of it), and each disjunct's slack (its best row's lower bound less ``d`` and the
    ``margin``): CROWN's adaptive slopes left most of ACAS Xu 4_2 / prop_2's deep boxes open
    where ``ALPHA_STEPS`` steps close them (200 of 200 sampled, 0.5 ms a box)."""
    n = len(sel)
    inter = {j: Bounds(b.lower[sel], b.upper[sel]) for j, b in every.items() if j != 0}
    region = Bounds(lo.reshape(n, *shape), hi.reshape(n, *shape))
    Cn = C.expand(n, *C.shape).reshape(n, C.shape[0], *graph.nodes[graph.output].shape)
    fin, _ = alpha_crown(
        graph,
        region,
        Cn.to(lo.dtype),
        iterations=ALPHA_STEPS,
        optimize_intermediate=False,
        bound_upper=False,
        intermediate=inter,
        deadline=current(),
    )
    slack = fin.lower.reshape(n, -1).double() - d - margin
    per = torch.stack([slack[:, g].amax(1) for g in groups], 1)
    return open_ & ~(per > 0), per


def _leaf_check(graph: BoundGraph, C, d, groups, share: float) -> LeafCheck | None:
    """The LP leaf check for a ReLU chain whose boxes keep the bounds the LP needs (the
    pre-activations of its ReLUs, packed in order), else None; None too for ``share`` 0."""
    chain = relu_chain(graph) if share > 0 and _keeps_bounds(graph) else None
    if chain is None or sorted(graph.plan.needs) != list(chain.nodes[:-1]):
        return None
    return LeafCheck(chain, C.double(), d.double(), groups, share)


def _split_all(
    graph, lo, hi, op, C, rows_and_margins, d, groups, shape, intermediate, pb, passes=None
):
    """Every box halved along every input that varies, all children bounded over the rows
    ``C`` (``rows_and_margins`` keeps the property's and gives each box's margins; ``pb``: the
    boxes' packed intermediate bounds; ``passes``: as for :func:`bound_boxes`): the children's
    boxes, open disjuncts, lower bounds, their input coefficients and packed intermediate
    bounds."""
    L, H = lo, hi
    for k in ((hi - lo) > 0).any(0).nonzero().squeeze(1).tolist():
        mid = (L[:, k] + H[:, k]) / 2
        H1, L2 = H.clone(), L.clone()
        H1[:, k], L2[:, k] = mid, mid
        L, H = torch.cat([L, L2]), torch.cat([H1, H])
    kept: list = []
    parent = pb.repeat(len(L) // len(lo), 1, 1)
    lb, A, bias = bound_boxes(graph, L, H, C, shape, intermediate, parent, kept, passes=passes)
    lb, A, bias, margin = rows_and_margins(lb, A, bias, L, H)
    parents = op.repeat(len(L) // len(lo), 1)
    child_open = parents & ~(disjunct_slack(lb, A, bias, L, H, d, groups, margin) > 0)
    return L, H, child_open, lb, A, kept[0]


def _rows_to_improve(lb, A, op, d, groups, weakest_first: bool = False) -> Tensor:
    """Per box, the input coefficients (N, 2, inputs) of two rows whose bounds branching should
    improve: the row closest to refuting the weakest open disjunct (a conjunction is refuted by
    any one of its rows), and the weakest open row of all (that one first if ``weakest_first``)."""
    slack = lb - d
    best_row, best_val = [], []
    for g in groups:
        v, i = slack[:, g].max(1)
        best_row.append(i + g.start)
        best_val.append(v)
    rows = torch.stack(best_row, 1)
    vals = torch.where(op, torch.stack(best_val, 1), torch.inf)
    n = torch.arange(len(A))
    closest = rows[n, vals.argmin(1)]
    row_open = torch.zeros_like(slack, dtype=torch.bool)
    for k, g in enumerate(groups):
        row_open[:, g] = op[:, k : k + 1]
    weakest = torch.where(row_open, slack, torch.inf).argmin(1)
    first, second = (weakest, closest) if weakest_first else (closest, weakest)
    return torch.stack([A[n, first], A[n, second]], 1)


def _candidates(score: Tensor, m: int) -> Tensor:
    """(n, m) distinct inputs to split, taken in turn from each row's largest scores
    (score: (n, rows, inputs))."""
    n, rows, k = score.shape
    if m >= k:
        return torch.arange(k).expand(n, k)
    taken = torch.zeros(n, k, dtype=torch.bool)
    out = []
    for j in range(m):
        pick = score[:, j % rows].masked_fill(taken, -torch.inf).argmax(1)
        taken[torch.arange(n), pick] = True
        out.append(pick)
    return torch.stack(out, 1)
