"""Input splitting's leaf checks on the boxes the look-ahead leaves open: alpha-CROWN's slopes on
the property's rows (the intermediate bounds of the boxes' own pass), then the exact LP of the
triangle relaxation (:mod:`leaf_lp`) within its share of the time."""

from __future__ import annotations

import torch

from robustlab.bounds.alpha import alpha_crown
from robustlab.bounds.graph import BoundGraph
from robustlab.bounds.ops.base import Bounds
from robustlab.deadline import current
from robustlab.verify.leaf_lp import LeafCheck, relu_chain

ALPHA_STEPS = 10  # alpha-CROWN's steps on the rows of the look-ahead's open children


def alpha_close(graph, every, sel, lo, hi, C, d, groups, margin, open_, shape):
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


def leaf_check(graph: BoundGraph, C, d, groups, share: float, keeps: bool) -> LeafCheck | None:
    """The LP leaf check for a ReLU chain whose boxes keep the bounds the LP needs (``keeps``:
    whether they keep any, ``bab.pack_bounds``; the pre-activations of its ReLUs, packed in
    order), else None; None too for ``share`` 0."""
    chain = relu_chain(graph) if share > 0 and keeps else None
    if chain is None or sorted(graph.plan.needs) != list(chain.nodes[:-1]):
        return None
    return LeafCheck(chain, C.double(), d.double(), groups, share)
