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

from robustlab.bounds.backward import backward
from robustlab.bounds.cut import CutPasses, convolutional, mixed_bounds
from robustlab.bounds.forward import affordable as forward_affordable
from robustlab.bounds.forward import forward_bounds
from robustlab.bounds.forward import supported as forward_ok
from robustlab.bounds.graph import BoundGraph
from robustlab.bounds.intermediate import intermediate_bounds
from robustlab.bounds.ops.base import Bounds, InputRegion
from robustlab.bounds.plan import cut_node, float32_pays
from robustlab.verify.branching import candidates, rows_to_improve, spread, to_bound
from robustlab.verify.cost import mixed_pays
from robustlab.verify.disjuncts import disjunct_slack
from robustlab.verify.disjuncts import refuted_rows as refuted_rows  # for bounds_benchmark.py
from robustlab.verify.leaves import alpha_close, leaf_check
from robustlab.verify.margins import UNIT, box_margins, output_rows, stack_spec
from robustlab.verify.schedule import portfolio
from robustlab.verify.spec import Property

_stack_spec = stack_spec  # the name benchmarks/bounds_benchmark.py uses

PARENT_BOUNDS_MAX = 4096  # neurons whose bounds a queued box keeps for its children (memory)
SPLIT_FLOOR = 0.05  # look-ahead: inputs whose smart score is below this share of the best's
# look-ahead: inputs narrower (relative to the root box) than this share of the box's widest are
# not split. ACAS Xu 3_3 / prop_2 stalled at 3e-5 of its volume on boxes 1/4096 wide in X_1 (a
# ridge's steep input) and 1/8 in X_0 and X_2: some 40 unstable ReLUs each, relaxations 1e-2
# below the true minimum 1.2e-3 (LP included), and halving X_1 again won every look-ahead
SPLIT_ASPECT = 1 / 64
LEAF_SHARE = 4.0  # the LP leaf check's time against the bound passes' (leaf_lp.LeafCheck)
# the leaf checks (alpha, then the LP) start once the search has spent this many seconds of CPU
# in its own steps: short searches finish sooner by splitting alone (ACAS Xu, one thread, CPU s,
# with the checks from the start / without any: 3_8 / prop_1 5.1 / 1.7, 4_9 / prop_1 10.6 / 4.8,
# 1_1 / prop_6 15.1 / 5.4, 1_8 / prop_2 4.3 / 1.4), long ones need them (3_3 / prop_2, 4_2 /
# prop_2: the LP closes their deep boxes near the ridge)
LEAF_AFTER = 2.0
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
    C, d, _ = stack_spec(prop)
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
    leaf_after: float | None = None,
) -> Generator[float, None, tuple[str, Tensor | None]]:
    """Input-splitting branch and bound, one batch of boxes per step (a generator that yields the
    fraction of the root box's volume still open before each step, and returns ``("holds",
    None)`` or ``("violated", x)``).

    Branching looks ahead: every undecided box is bounded split in two along each of the
    ``lookahead`` inputs with the largest |coefficient| x width, and the split whose worse half has
    the best bound is taken (only candidates ``SPLIT_FLOOR`` and ``SPLIT_ASPECT`` allow are
    bounded); halves already proven are dropped. The coefficients are those of the
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
    alpha-CROWN's slopes on the rows (:func:`leaves.alpha_close`), then the exact LP of their
    triangle relaxation (:class:`leaf_lp.LeafCheck`; ReLU chains whose boxes keep their
    bounds) with this share of the time against the bound passes (0: neither), once the
    search's own steps have taken ``leaf_after`` (default ``LEAF_AFTER``) seconds of CPU."""
    stats = stats or BabStats()
    C, d, groups = stack_spec(prop)
    if margin is None:
        margin = hold_margin(graph, prop, shape, intermediate=intermediate, cache=cache)
    leaf_share = LEAF_SHARE if leaf_share is None else leaf_share
    box_margin = BOX_MARGIN if box_margin is None else box_margin
    leaf_after = LEAF_AFTER if leaf_after is None else leaf_after
    own = 0.0  # CPU seconds of this search's steps so far
    leaf = leaf_check(
        graph, C, d, groups, leaf_share if reuse_parent else 0.0, _keeps_bounds(graph)
    )
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
    a_q = rows_to_improve(lb, A, open_q, d, groups, weakest_first)  # per box: (2, inputs)
    if not open_q.any():
        return "holds", None
    free = (hi_q[0] > lo_q[0]).nonzero().squeeze(1)
    scale = torch.zeros_like(hi_q[0])
    scale[free] = 1 / (hi_q[0, free] - lo_q[0, free])
    root = (hi_q[0, free] - lo_q[0, free]).log().sum()
    while len(lo_q):
        frac = float(((hi_q - lo_q)[:, free].log().sum(1) - root).exp().sum())
        stats.open_fraction = frac
        yield frac
        t_step = time.process_time()
        checks = leaf if own >= leaf_after else None  # the leaf checks, once they are due
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
            improve = rows_to_improve(lb_c[keep], A_c[keep], child_open[keep], d, groups)
            a_q = torch.cat([improve, a_q])
            stats.max_queue = max(stats.max_queue, len(lo_q))
            own += time.process_time() - t_step
            continue
        # look ahead: both halves along the `lookahead` inputs with the largest |coefficient| x
        # width (the "smart" score), bounded in one batch
        m = min(lookahead, k_in)
        smart = a.abs() * (hi - lo)[:, None]
        cands = candidates(smart, m)  # (n, m)
        # only inputs whose "smart" score is not negligible: halving an input already narrow
        # mostly re-bounds the box from its own bounds (CROWN is not monotone in them), a tiny
        # gain that won the look-ahead again and again (ACAS Xu 4_2 / prop_2: X_0 halved to
        # width 1e-7 while X_2 stayed 0.125)
        best = smart.amax(1)
        worth = best.gather(1, cands) >= SPLIT_FLOOR * best.amax(1, keepdim=True)
        rel = (hi - lo) * scale  # widths relative to the root box's (0 for fixed inputs)
        wide = rel.gather(1, cands) >= SPLIT_ASPECT * rel.amax(1, keepdim=True)
        # wide inputs whose score is not negligible; else the wide ones; else any (candidates
        # without the widest input)
        worth = torch.where((worth & wide).any(1, keepdim=True), worth & wide, wide)
        worth |= ~worth.any(1, keepdim=True)
        mids = (lo + hi) / 2
        los, his = [], []
        for j in range(m):
            k = cands[:, j : j + 1]
            h1 = hi.clone().scatter_(1, k, mids.gather(1, k))
            l2 = lo.clone().scatter_(1, k, mids.gather(1, k))
            los += [lo, l2]
            his += [h1, hi]
        L, H = torch.cat(los), torch.cat(his)
        # only the candidates the look-ahead may take are bounded (the same choice, fewer boxes)
        idx = to_bound(worth)
        Lb, Hb = (L, H) if idx is None else (L[idx], H[idx])
        stats.domains += len(Lb)
        stats.bound_calls += 1
        kept = []
        parent = pb.repeat(2 * m, 1, 1)
        parent = parent if idx is None else parent[idx]
        every: dict | None = {} if checks is not None else None  # every node's bounds (alpha)
        lbc, Ac, bc = bound_boxes(
            graph, Lb, Hb, rows_all, shape, intermediate, parent, kept, out=every, passes=passes
        )
        lbc, Ac, bc, mgc = rows_and_margins(lbc, Ac, bc, Lb, Hb)
        sl = disjunct_slack(lbc, Ac, bc, Lb, Hb, d, groups, mgc)
        packed = kept[0]
        if idx is not None:  # back to (m, 2, n) order; boxes not bounded are never chosen
            sl, lbc, Ac, mgc, packed = (
                spread(x, idx, len(L), f)
                for x, f in ((sl, -torch.inf), (lbc, 0.0), (Ac, 0.0), (mgc, 0.0), (packed, 0.0))
            )
        sl = sl.view(m, 2, n, -1)
        sl = torch.where(op[None, None], sl, torch.inf)  # closed disjuncts do not matter
        score = sl.amin(3).amin(1)  # (m, n): the worse half's weakest open disjunct
        # a candidate bounded beats every one not bounded, even at -inf
        score = torch.where(worth.T, score.clamp(min=-torch.finfo(score.dtype).max), -torch.inf)
        dim = score.argmax(0)
        pick = torch.arange(n)
        child_open = op[None] & ~(sl[dim, :, pick] > 0).transpose(0, 1)  # (2, n, disjuncts)
        rows = C.shape[0]
        lb_c = lbc.view(m, 2, n, rows)[dim, :, pick].transpose(0, 1)
        A_c = Ac.view(m, 2, n, rows, k_in)[dim, :, pick].transpose(0, 1)
        L = L.view(m, 2, n, k_in)[dim, :, pick].transpose(0, 1)
        H = H.view(m, 2, n, k_in)[dim, :, pick].transpose(0, 1)
        P = packed.view(m, 2, n, *packed.shape[1:])[dim, :, pick].transpose(0, 1)
        keep = child_open.any(2)
        if checks is not None and keep.any():  # alpha, then the LP, on the children still open
            mg_c = mgc.view(m, 2, n, rows)[dim, :, pick].transpose(0, 1)
            flat = dim * 2 * n + torch.arange(2)[:, None] * n + pick  # (2, n): their passes
            if idx is not None:  # positions in the pass over the bounded candidates
                flat = torch.full((2 * m * n,), -1, dtype=torch.long).index_copy_(
                    0, idx, torch.arange(len(idx))
                )[flat]
            child_open[keep], sl_c = alpha_close(
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
        if checks is not None and keep.any():
            child_open[keep] = checks.close(
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
                rows_to_improve(lb_c[keep], A_c[keep], child_open[keep], d, groups, weakest_first),
                a_q,
            ]
        )
        stats.max_queue = max(stats.max_queue, len(lo_q))
        own += time.process_time() - t_step
    return "holds", None


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
