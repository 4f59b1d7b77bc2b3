"""Branch and bound on a Spec's open regions, each in turn with its share of the time left:
ReLU splitting, splitting general nonlinearities, or input splitting (on the reduced graph of
the region's free inputs) as a portfolio of branching rules beside the sample search."""

from __future__ import annotations

import time

from robustlab.bounds.ops.activation import ReLU
from robustlab.verify import bab, cost, embed
from robustlab.verify.counterexamples import confirm_near
from robustlab.verify.nonlinear_split import nonlinear_split
from robustlab.verify.relu_split import relu_split
from robustlab.verify.spec import Property, Spec

LOOKAHEAD_SHARE = 4.0  # input splitting: the full look-ahead's time against 1 for each other


def branch_regions(
    graph, spec: Spec, regions, shape, model, oracle, deadline, how, stats, cache, fals=None
):
    """Branch and bound on each region in turn, each with its share of the time left (starting
    from the region's CROWN pass where ``cache`` kept it); ``fals``: a ``falsify.Falsifier`` on
    every open region, run beside input splitting."""
    st = bab.BabStats()
    verdicts = []
    try:
        for i, r in enumerate(regions.tolist()):
            end = time.monotonic() + (deadline - time.monotonic()) / (len(regions) - i)
            prop = spec.property(r)
            first = cache.of(graph, prop)
            end = min(end, deadline)
            verdict, x = branch(graph, prop, shape, model, end, how, st, first, cache, fals)
            if verdict == "falsified":  # the sample search's confirmed counterexample
                return "violated", x, ""
            if verdict == "violated":
                cex = confirm_near(model, shape, prop, oracle, x)
                if cex is not None:
                    return "violated", cex, ""
                verdict = "unknown"
            if verdict != "holds":
                verdicts.append(verdict)
    finally:
        stats.update(domains=st.domains, max_queue=st.max_queue)
    if not verdicts:
        stats["proved_by"] = how[0]
        return "holds", None, ""
    return ("timeout" if "timeout" in verdicts else "unknown"), None, ""


def branch(
    graph,
    prop: Property,
    shape,
    model,
    end: float,
    how,
    st: bab.BabStats,
    first=None,
    cache=None,
    fals=None,
):
    """Branch and bound on one region until ``end`` with ``how = (strategy, intermediate
    bounds for input splitting)``: ``(verdict, x or None)``; ``first``: the region's CROWN pass
    (``root.RootPass``) when it was kept; ``cache``: the ``root.RootCache`` whose last one-box
    pass input splitting's root may reuse; ``fals``: the sample search run beside input
    splitting (verdict ``falsified`` with its confirmed counterexample)."""
    strategy, intermediate = how
    if strategy == "relu-split" and not any(isinstance(n.op, ReLU) for n in graph.nodes):
        strategy = "nonlinear-split"
    if strategy == "relu-split":
        return relu_split(graph, prop, shape, model, deadline=end, stats=st, first=first)
    if strategy == "nonlinear-split":
        return nonlinear_split(graph, prop, shape, model, deadline=end, stats=st, first=first)
    margin = None if first is None else first.margin
    red = embed.reduce(graph, model, prop, shape)
    if red is None:
        margin = margin if intermediate == "crown" else None  # the cached pass is CROWN's
        return input_split(graph, prop, shape, model, end, intermediate, st, margin, cache, fals)
    verdict, z = input_split(
        red.graph, red.prop, (len(red.prop.lower),), red.model, end, intermediate, st, None,
        cache, fals,
    )  # fmt: skip
    if verdict == "falsified":  # the full network's input already
        return verdict, z
    return verdict, (None if z is None else red.expand(z))


def input_split(
    graph,
    prop: Property,
    shape,
    model,
    end: float,
    intermediate,
    st,
    margin=None,
    cache=None,
    fals=None,
):
    """Input splitting on the region's (free) inputs until ``end``; ``margin``: that of
    :func:`bab.hold_margin` (computed when not given); ``cache``, ``fals``: as for
    :func:`branch`."""
    # a portfolio of branching rules, with shares of time: look-ahead over every input
    # (decisive on some properties), and the "smart" rule on the row closest to refuting the
    # weakest disjunct, or on the weakest row
    free = int((prop.upper > prop.lower).sum())
    how = "forward" if intermediate in ("forward", "both") else "crown"
    if margin is None:
        margin = bab.hold_margin(graph, prop, shape, intermediate=how, cache=cache)
    kw = {"stats": st, "intermediate": intermediate, "margin": margin, "cache": cache}
    if intermediate in ("forward", "both"):  # cheap bounds on many boxes: no look-ahead wasted
        # the mixed mode's boxes each pay CROWN's rows: the "smart" split alone (cGAN 32x32x3
        # prop 1: holds after 5 splits either way, 10 boxes and 77 s of CPU against 20 and 129)
        look = 1 if cost.mixed_mode(graph) else min(max(free, 1), 2)
        fwd = bab.search_steps(
            graph,
            prop,
            shape,
            model,
            lookahead=look,
            split_all=free <= 3,
            stats=st,
            intermediate="forward",
            margin=margin,
            cache=cache,
        )
        if intermediate == "forward":
            return portfolio_beside([fwd], end, None, fals)
        kw["intermediate"] = "crown"
        crown_full = bab.search_steps(graph, prop, shape, model, lookahead=max(free, 1), **kw)
        crown_one = bab.search_steps(graph, prop, shape, model, lookahead=1, **kw)
        return portfolio_beside([fwd, crown_full, crown_one], end, [2.0, 1.0, 2.0], fals)
    # children reuse their parent's bounds in the look-ahead only: decisive on some properties,
    # slower on others (CROWN is not monotone in its intermediate bounds)
    one = {**kw, "lookahead": 1, "reuse_parent": False}
    searches = [
        bab.search_steps(graph, prop, shape, model, lookahead=max(free, 1), **kw),
        bab.search_steps(graph, prop, shape, model, **one),
    ]
    if any(len(dj.d) > 1 for dj in prop.disjuncts):  # else the two rows are the same
        searches.append(bab.search_steps(graph, prop, shape, model, weakest_first=True, **one))
    # the look-ahead costs k_in times more per split but decides the hard properties: alone it
    # proves ACAS Xu 4_9 / prop_1 in 16 s and 1_8 / prop_2 in 8 s, where the one-input searches
    # had not finished at 150 s
    shares = [LOOKAHEAD_SHARE] + [1.0] * (len(searches) - 1)
    return portfolio_beside(searches, end, shares, fals)


def portfolio_beside(searches: list, end: float, shares, fals):
    """:func:`bab.portfolio`, with the sample search ``fals`` beside it where there is one."""
    if fals is None:
        return bab.portfolio(searches, end, shares)
    return fals.beside(searches, end, shares)
