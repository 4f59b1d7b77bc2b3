"""The verification procedure for a loaded model and a Spec: falsification on every region at
once, CROWN / alpha-CROWN bounds on batches of regions, a second attack, then branch and bound
region by region (input splitting for few inputs, ReLU splitting for ReLU networks, splitting the
inputs of general nonlinearities otherwise), each region with its share of the time left."""

from __future__ import annotations

import time

import torch
from torch import Tensor

from robustlab.bounds.alpha import alpha_crown
from robustlab.bounds.graph import BoundGraph, graph_of
from robustlab.bounds.ops.activation import ReLU
from robustlab.bounds.ops.base import Activation, InputRegion
from robustlab.bounds.ops.linear import Conv
from robustlab.bounds.plan import float32_pays
from robustlab.bounds.rounding import round_down
from robustlab.deadline import DeadlineExceeded, check, within
from robustlab.errors import RobustlabError, UnsupportedOperation
from robustlab.verify import bab, cost, embed, root
from robustlab.verify.disjuncts import refuted_rows
from robustlab.verify.falsify import Falsifier, attack, float32_box, sample_search, search
from robustlab.verify.nonlinear_split import nonlinear_split
from robustlab.verify.oracle import confirm
from robustlab.verify.relu_split import relu_split
from robustlab.verify.spec import Property, Spec
from robustlab.verify.surrogate import logit_view, with_surrogate_gradients

STRATEGIES = ("auto", "input-split", "relu-split", "nonlinear-split", "bounds")
INPUT_SPLIT_MAX_DIM = 16
# attacks: (share of the time left, rounds of fresh starts) before the bounds, before branching;
# the first is one whole round, cut only past its share: a round cut short wastes its starts
# (traffic_signs 30_8258 eps 10: a round takes 2-4 s, 5% of 60 s cut it and the violation
# waited for the next attack, after a 28 s bound pass)
ATTACKS = ((0.15, 1), (0.15, 3))
REGION_BATCH = 256  # regions bounded in one pass
LOOKAHEAD_SHARE = 4.0  # input splitting: the full look-ahead's time against 1 for each other
BOUNDS_SHARE = 0.5  # of the time left: incomplete bounds slower than this give way to attacks
ESTIMATE_MARGIN = 2.0  # ... unless the estimated time of a CROWN pass, times this, is longer
# input splitting: the sample search's rounds before the bounds and before branching, each
# phase at most SEARCH_FIRST_S seconds (a round left unfinished goes on beside branch and bound:
# ``falsify.Falsifier.beside``); ACAS Xu's first round takes about 0.05 s, tllverifybench's
# (wider networks) 0.5-1 s
SEARCH_ROUNDS = (1, 1)
SEARCH_FIRST_S = 0.15


def free_inputs(spec: Spec) -> int:
    """How many inputs some region lets vary (zero-width inputs are constants)."""
    return int((spec.upper > spec.lower).any(0).sum())


def choose_strategy(graph: BoundGraph, n_inputs: int) -> str:
    """Input splitting for few inputs that vary; ReLU splitting when every activation is a
    ReLU; branching on general nonlinearities otherwise."""
    if n_inputs <= INPUT_SPLIT_MAX_DIM:
        return "input-split"
    acts = [n.op for n in graph.nodes[1:] if isinstance(n.op, Activation)]
    return "relu-split" if all(type(a) is ReLU for a in acts) else "nonlinear-split"


def verify_spec(
    model,
    shape: tuple[int, ...],
    spec: Spec,
    oracle,
    *,
    deadline: float,
    strategy: str = "auto",
    stats: dict | None = None,
) -> tuple[str, dict | None, str, str]:
    """``(verdict, counterexample, strategy used, message)`` for ``spec`` on ``model`` (inputs of
    ``shape`` per sample) by ``deadline`` (``time.monotonic()``); ``oracle(x)`` gives the
    reference outputs (onnxruntime) at a flat input, and decides every counterexample."""
    stats = {} if stats is None else stats
    state = {"strategy": strategy}
    try:
        with within(deadline):
            verdict, cex, message = _verify(model, shape, spec, oracle, deadline, state, stats)
    except DeadlineExceeded:
        verdict, cex, message = "timeout", None, ""
    return verdict, cex, state["strategy"], message


def _share(deadline: float, fraction: float) -> float:
    return max(0.0, (deadline - time.monotonic()) * fraction)


def _verify(model, shape, spec: Spec, oracle, deadline, state, stats):
    stats["regions"] = len(spec)
    open_ = torch.arange(len(spec))
    try:
        graph, unsupported = graph_of(model, tuple(shape)), None
    except UnsupportedOperation as e:  # no bounds: attacks are all there is
        graph, unsupported = None, e
    strategy = state["strategy"]
    if strategy == "auto" and graph is not None:
        strategy = state["strategy"] = choose_strategy(graph, free_inputs(spec))
    stats["strategy"] = strategy
    t0 = time.monotonic()
    share, rounds = (1.0, 1_000_000) if graph is None else ATTACKS[0]
    fals = None  # few inputs: the sample search, before the bounds and beside branch and bound
    if graph is not None and strategy == "input-split":
        fals = _sample_falsifier(model, shape, spec, open_, oracle, stats)
        cex = fals.run(min(_share(deadline, share), SEARCH_FIRST_S), SEARCH_ROUNDS[0])
    else:
        cex = _falsify(model, shape, spec, open_, oracle, _share(deadline, share), rounds, 0, stats)
    stats["attack_s"] = round(time.monotonic() - t0, 3)
    if cex is not None:
        return "violated", cex, ""
    if graph is None:
        return "unknown", None, str(unsupported)
    intermediate = "crown"
    if strategy == "input-split":
        red = embed.reduce(graph, model, spec.property(0), shape)
        ratio = cost.crown_over_forward(graph if red is None else red.graph)
        # few inputs and a large network: forward bounds go further, alone or beside CROWN's
        if ratio > cost.FORWARD_ONLY_RATIO:
            intermediate = "forward"
        elif ratio > cost.FORWARD_RATIO:
            intermediate = "both"
    stats["intermediate"] = intermediate
    # each open region's CROWN pass, kept for the passes after it (hold margin, alpha-CROWN,
    # branch and bound's root)
    cache = root.RootCache(graph)
    left = deadline - time.monotonic()
    estimate = cost.crown_cost(graph) / cost.CROWN_RATE if intermediate == "crown" else 0.0
    if estimate > left:
        # one bound pass would outlast the time left: attacks are all there is
        check()  # none past the deadline
        if fals is not None:
            cex = fals.run(left)
        else:
            cex = _falsify(model, shape, spec, open_, oracle, left, 1_000_000, 2, stats)
        if cex is not None:
            return "violated", cex, ""
        return "timeout", None, "a bound pass on this network would outlast the timeout"
    # a bound pass slower than its share leaves the rest of the time to attacks; the share is
    # at least twice the pass's estimated time (a pass the estimate says fits is not cut short)
    share = min(left, max(BOUNDS_SHARE * left, ESTIMATE_MARGIN * estimate))
    try:
        with within(time.monotonic() + share):
            open_ = _bound_regions(
                graph, model, spec, open_, shape, strategy, intermediate, stats, cache
            )
    except DeadlineExceeded:
        if time.monotonic() >= deadline:
            raise
        stats["bounds_s"] = "over share"
        if fals is not None:
            cex = fals.run(_share(deadline, 1.0))
        else:
            cex = _falsify(
                model, shape, spec, open_, oracle, _share(deadline, 1.0), 1_000_000, 2, stats
            )
        if cex is not None:
            return "violated", cex, ""
        return "timeout", None, "the bound passes on this network outlast their share of the time"
    if not len(open_):
        return "holds", None, ""
    if strategy == "bounds":
        return "unknown", None, ""
    share, rounds = ATTACKS[1]
    if fals is not None and len(open_) < len(spec):  # search the regions left open only
        fals = _sample_falsifier(model, shape, spec, open_, oracle, stats, fals.used)
    if fals is not None:
        cex = fals.run(min(_share(deadline, share), SEARCH_FIRST_S), SEARCH_ROUNDS[1])
    else:
        cex = _falsify(model, shape, spec, open_, oracle, _share(deadline, share), rounds, 1, stats)
    if cex is not None:
        return "violated", cex, ""
    how = (strategy, intermediate)
    return _branch_regions(
        graph, spec, open_, shape, model, oracle, deadline, how, stats, cache, fals
    )


def _branch_regions(
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
            verdict, x = _branch(graph, prop, shape, model, end, how, st, first, cache, fals)
            if verdict == "falsified":  # the sample search's confirmed counterexample
                return "violated", x, ""
            if verdict == "violated":
                cex = _confirm_near(model, shape, prop, oracle, x)
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


def _bound_regions(graph, model, spec: Spec, regions, shape, strategy, intermediate, stats, cache):
    """The regions that incomplete bounds leave open (the cheaper method first); ``cache``
    receives the CROWN pass of each region left open."""
    methods = ("crown", "alpha-crown")
    if strategy == "relu-split":
        methods = ("crown",)  # relu-split starts with its own alpha-CROWN pass
    if intermediate == "forward":
        methods = ("forward",)
    elif intermediate == "both":
        methods = ("forward", "crown", "alpha-crown")
    t0 = time.monotonic()
    margins: dict[int, Tensor] = {}  # per region, from the first method's pass
    for method in methods:
        try:
            refuted = _bounds_refute(graph, model, spec, regions, shape, method, margins, cache)
        except RobustlabError:  # a relaxation that cannot be proven here (a softmax's
            break  # reciprocal overflowing float64): the regions stay open
        regions = regions[~refuted]
        if not len(regions):
            stats["proved_by"] = method
            break
    stats["bounds_s"] = round(time.monotonic() - t0, 3)
    stats["open_regions"] = len(regions)
    return regions


def _falsify(model, shape, spec: Spec, regions, oracle, seconds, rounds: int, seed: int, stats):
    """A confirmed counterexample from ``rounds`` rounds of attacks on ``regions`` within
    ``seconds``, or None."""
    if not len(regions):
        return None
    stop = time.monotonic() + seconds
    k = 0
    model = _attack_view(model, spec, regions, shape)
    while True:
        found = attack(
            model,
            spec,
            regions,
            shape,
            seconds=max(0.0, stop - time.monotonic()),
            rounds=rounds,
            seed=seed + k,
        )
        if found is None:
            return None
        r, x = found
        cex = confirm(oracle, spec.lower[r], spec.upper[r], _region_violation(spec, r), x)
        if cex is not None:
            return cex
        stats["rejected_candidates"] = stats.get("rejected_candidates", 0) + 1
        k += 1000
        if time.monotonic() > stop:
            return None


def _attack_view(model, spec: Spec, regions, shape):
    """The model as attacks see it: the logits where the property compares outputs of a final
    softmax (saturated probabilities stall the attack), else the same outputs with gradients
    through sign / softmax; candidates are confirmed on the network either way."""
    centre = ((spec.lower[regions[:1]] + spec.upper[regions[:1]]) / 2).float()
    view = logit_view(model, spec.C, spec.d, centre.reshape(-1, *shape))
    return view or with_surrogate_gradients(model)


def _sample_falsifier(model, shape, spec: Spec, regions, oracle, stats, used=0.0) -> Falsifier:
    """The sample search (``falsify.sample_search``) on ``regions``, confirmed by ``oracle``;
    ``used``: the seconds of an earlier one."""
    progress: dict = {}
    steps = sample_search(
        _attack_view(model, spec, regions, shape), spec, regions, shape, progress=progress
    )

    def check(r: int, x: Tensor):
        return confirm(oracle, spec.lower[r], spec.upper[r], _region_violation(spec, r), x)

    fals = Falsifier(steps, check, progress, stats)
    fals.used = used
    return fals


def _region_violation(spec: Spec, r: int):
    region = torch.tensor([r])
    return lambda y: spec.violation(y, region)


def _bounds_refute(
    graph, model, spec: Spec, regions: Tensor, shape, method: str, margins: dict, cache
) -> Tensor:
    """Per region: whether ``method``'s bounds refute every disjunct (some row of each) by the
    margin of :func:`bab.hold_margin` (computed with the first method's bounds, kept in
    ``margins`` by region); ``forward``: forward linear intermediate bounds over the region's
    free inputs. A CROWN pass goes into ``cache`` (``root.RootCache``) for each region it
    leaves open; alpha-CROWN starts from the cached passes instead of repeating them."""
    proven = torch.zeros(len(regions), dtype=torch.bool)
    roff, koff = spec.offsets
    for s in range(0, len(regions), REGION_BATCH):
        part = regions[s : s + REGION_BATCH]
        C, d, group, n_dis = spec.padded(part)
        count = roff[part + 1] - roff[part]
        if C.shape[1] == 0:
            proven[s : s + len(part)] = count == 0
            continue
        idx = part.tolist()
        lo, hi = spec.lower[part], spec.upper[part]
        n_rows = (koff[roff[part + 1]] - koff[roff[part]]).tolist()
        kept: dict | None = {}
        with torch.no_grad():
            if method == "forward":  # forward linear intermediate bounds, CROWN's last pass
                pairs = [
                    _forward_bound(graph, model, spec.property(r), shape, C[i], d[i], cache)
                    for i, r in enumerate(idx)
                ]
                lb = torch.cat([p[0] for p in pairs])
                margin = torch.cat([p[1] for p in pairs])
            else:
                if method == "crown" and _float32_pays(graph, C, len(part)):
                    lo32, hi32 = round_down(lo, torch.float32), -round_down(-hi, torch.float32)
                    lb, margin = bab.bounds_and_margins(graph, lo32, hi32, C.float(), d, shape)
                    kept = None  # float32 bounds: later passes make their own (float64)
                elif method == "crown" or not all(r in margins for r in idx):
                    lb, margin = bab.bounds_and_margins(graph, lo, hi, C, d, shape, out=kept)
                    inter = kept
                else:
                    margin = torch.stack([margins[r] for r in idx])
                    passes = [
                        cache.get(lo[i], hi[i], C[i, :k], d[i, :k]) for i, k in enumerate(n_rows)
                    ]
                    ok = all(p is not None for p in passes)
                    inter = root.stack(passes) if ok else None
                if method != "crown":
                    region = InputRegion(lo.reshape(-1, *shape), hi.reshape(-1, *shape))
                    Cs = C.reshape(len(part), C.shape[1], *graph.nodes[graph.output].shape)
                    fin, kept = alpha_crown(
                        graph, region, Cs, bound_upper=False, intermediate=inter, in_cone=True
                    )
                    lb = fin.lower
        for i, r in enumerate(idx):
            margins.setdefault(r, margin[i])
        rows = refuted_rows(lb.double(), d, margin).long()
        per = torch.zeros(len(part), n_dis + 1, dtype=torch.long)
        per = per.scatter_reduce(1, group, rows, "amax", include_self=True)
        have = torch.arange(n_dis + 1)[None] < count[:, None]
        done = ((per > 0) | ~have).all(1)
        proven[s : s + len(part)] = done
        # the passes of every region left open, for the passes after them
        for i in (
            (~done).nonzero().reshape(-1).tolist()
            if method != "forward" and kept is not None
            else []
        ):
            k = n_rows[i]
            if method == "crown":
                first = root.RootPass(
                    lo[i], hi[i], C[i, :k], d[i, :k], root.split(kept, i, len(part)),
                    lb[i, :k], margin[i, :k],
                )  # fmt: skip
                if not cache.put(first):
                    break  # the cache is full
            elif (first := cache.get(lo[i], hi[i], C[i, :k], d[i, :k])) is not None:
                cache.add_alpha(first, lb[i, :k], root.split(kept, i, len(part)))
    return proven


def _float32_pays(graph: BoundGraph, C: Tensor, batch: int) -> bool:
    """Whether the first CROWN pass runs in the rigorous float32 mode (``tracker.py``): on
    convolutional networks large enough for it to pay (``plan.float32_pays``; TinyYOLO's pass
    31 s in float64, 12 s in float32, proving the same rows), with rows exact in float32 (the
    box is rounded outward)."""
    return (
        any(isinstance(n.op, Conv) for n in graph.nodes)
        and float32_pays(graph, batch)
        and torch.equal(C.float().double(), C.double())
    )


def _forward_bound(graph, model, prop: Property, shape, C: Tensor, d: Tensor, cache):
    """Lower bounds (1, rows) of ``C y`` on one region, with forward intermediate bounds, and
    their margins (1, rows); the pass is kept in ``cache`` for branch and bound's root."""
    red = embed.reduce(graph, model, prop, shape)
    if red is not None:
        graph, prop, shape = red.graph, red.prop, (len(red.prop.lower),)
    lo, hi = prop.lower[None].double(), prop.upper[None].double()
    return bab.bounds_and_margins(graph, lo, hi, C[None], d[None], shape, "forward", cache=cache)


def _branch(
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
        return _input_split(graph, prop, shape, model, end, intermediate, st, margin, cache, fals)
    verdict, z = _input_split(
        red.graph, red.prop, (len(red.prop.lower),), red.model, end, intermediate, st, None,
        cache, fals,
    )  # fmt: skip
    if verdict == "falsified":  # the full network's input already
        return verdict, z
    return verdict, (None if z is None else red.expand(z))


def _input_split(
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
    :func:`_branch`."""
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
            return _portfolio([fwd], end, None, fals)
        kw["intermediate"] = "crown"
        crown_full = bab.search_steps(graph, prop, shape, model, lookahead=max(free, 1), **kw)
        crown_one = bab.search_steps(graph, prop, shape, model, lookahead=1, **kw)
        return _portfolio([fwd, crown_full, crown_one], end, [2.0, 1.0, 2.0], fals)
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
    return _portfolio(searches, end, shares, fals)


def _portfolio(searches: list, end: float, shares, fals):
    """:func:`bab.portfolio`, with the sample search ``fals`` beside it where there is one."""
    if fals is None:
        return bab.portfolio(searches, end, shares)
    return fals.beside(searches, end, shares)


def _confirm_near(model, shape, prop: Property, oracle, x: Tensor) -> dict | None:
    """A confirmed counterexample at the branch and bound's candidate ``x`` rounded into the
    box's float32 points, or from a focused search around it."""
    lo32, hi32 = float32_box(prop.lower, prop.upper)
    x32 = torch.minimum(torch.maximum(x.float(), lo32), hi32)
    cex = confirm(oracle, prop.lower, prop.upper, prop.violation, x32)
    if cex is not None:
        return cex
    width = prop.upper - prop.lower
    near = Property(
        torch.maximum(x - 1e-3 * width, prop.lower),
        torch.minimum(x + 1e-3 * width, prop.upper),
        prop.disjuncts,
    )
    x2 = search(model, near, shape, samples=512, seconds=1.0)
    if x2 is None:
        return None
    return confirm(oracle, prop.lower, prop.upper, prop.violation, x2)
