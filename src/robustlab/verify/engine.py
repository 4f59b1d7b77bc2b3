"""The verification procedure for a loaded model and a Spec: falsification on every region at
once, CROWN / alpha-CROWN bounds on batches of regions, a second attack, then branch and bound
region by region (input splitting for few inputs, ReLU splitting for ReLU networks, splitting the
inputs of general nonlinearities otherwise), each region with its share of the time left."""

from __future__ import annotations

import time

import torch

from robustlab.bounds.graph import BoundGraph, graph_of
from robustlab.bounds.ops.activation import ReLU
from robustlab.bounds.ops.base import Activation
from robustlab.deadline import DeadlineExceeded, check, within
from robustlab.errors import UnsupportedOperation
from robustlab.verify import cost, embed, root
from robustlab.verify.branch_regions import branch_regions
from robustlab.verify.counterexamples import falsify_regions, sample_falsifier
from robustlab.verify.region_bounds import bound_regions
from robustlab.verify.spec import Spec

STRATEGIES = ("auto", "input-split", "relu-split", "nonlinear-split", "bounds")
INPUT_SPLIT_MAX_DIM = 16
# attacks: (share of the time left, rounds of fresh starts) before the bounds, before branching;
# the first is one whole round, cut only past its share: a round cut short wastes its starts
# (traffic_signs 30_8258 eps 10: a round takes 2-4 s, 5% of 60 s cut it and the violation
# waited for the next attack, after a 28 s bound pass)
ATTACKS = ((0.15, 1), (0.15, 3))
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
        fals = sample_falsifier(model, shape, spec, open_, oracle, stats)
        cex = fals.run(min(_share(deadline, share), SEARCH_FIRST_S), SEARCH_ROUNDS[0])
    else:
        cex = falsify_regions(
            model, shape, spec, open_, oracle, _share(deadline, share), rounds, 0, stats
        )
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
            cex = falsify_regions(model, shape, spec, open_, oracle, left, 1_000_000, 2, stats)
        if cex is not None:
            return "violated", cex, ""
        return "timeout", None, "a bound pass on this network would outlast the timeout"
    # a bound pass slower than its share leaves the rest of the time to attacks; the share is
    # at least twice the pass's estimated time (a pass the estimate says fits is not cut short)
    share = min(left, max(BOUNDS_SHARE * left, ESTIMATE_MARGIN * estimate))
    try:
        with within(time.monotonic() + share):
            open_ = bound_regions(
                graph, model, spec, open_, shape, strategy, intermediate, stats, cache
            )
    except DeadlineExceeded:
        if time.monotonic() >= deadline:
            raise
        stats["bounds_s"] = "over share"
        if fals is not None:
            cex = fals.run(_share(deadline, 1.0))
        else:
            cex = falsify_regions(
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
        fals = sample_falsifier(model, shape, spec, open_, oracle, stats, fals.used)
    if fals is not None:
        cex = fals.run(min(_share(deadline, share), SEARCH_FIRST_S), SEARCH_ROUNDS[1])
    else:
        cex = falsify_regions(
            model, shape, spec, open_, oracle, _share(deadline, share), rounds, 1, stats
        )
    if cex is not None:
        return "violated", cex, ""
    how = (strategy, intermediate)
    return branch_regions(
        graph, spec, open_, shape, model, oracle, deadline, how, stats, cache, fals
    )
