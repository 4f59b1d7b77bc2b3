"""Incomplete bounds on a Spec's regions, in batches: CROWN (in the rigorous float32 mode where
it pays), alpha-CROWN from the cached CROWN passes, or forward linear bounds over the regions'
free inputs; each region's first pass kept (``root.RootCache``) for the passes after it."""

from __future__ import annotations

import time

import torch
from torch import Tensor

from robustlab.bounds.alpha import alpha_crown
from robustlab.bounds.graph import BoundGraph
from robustlab.bounds.ops.base import InputRegion
from robustlab.bounds.ops.linear import Conv
from robustlab.bounds.plan import float32_pays
from robustlab.bounds.rounding import round_down
from robustlab.errors import RobustlabError
from robustlab.verify import bab, embed, root
from robustlab.verify.disjuncts import refuted_rows
from robustlab.verify.spec import Property, Spec

REGION_BATCH = 256  # regions bounded in one pass


def bound_regions(graph, model, spec: Spec, regions, shape, strategy, intermediate, stats, cache):
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
            refuted = bounds_refute(graph, model, spec, regions, shape, method, margins, cache)
        except RobustlabError:  # a relaxation that cannot be proven here (a softmax's
            break  # reciprocal overflowing float64): the regions stay open
        regions = regions[~refuted]
        if not len(regions):
            stats["proved_by"] = method
            break
    stats["bounds_s"] = round(time.monotonic() - t0, 3)
    stats["open_regions"] = len(regions)
    return regions


def bounds_refute(
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
                    forward_bound(graph, model, spec.property(r), shape, C[i], d[i], cache)
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


def forward_bound(graph, model, prop: Property, shape, C: Tensor, d: Tensor, cache):
    """Lower bounds (1, rows) of ``C y`` on one region, with forward intermediate bounds, and
    their margins (1, rows); the pass is kept in ``cache`` for branch and bound's root."""
    red = embed.reduce(graph, model, prop, shape)
    if red is not None:
        graph, prop, shape = red.graph, red.prop, (len(red.prop.lower),)
    lo, hi = prop.lower[None].double(), prop.upper[None].double()
    return bab.bounds_and_margins(graph, lo, hi, C[None], d[None], shape, "forward", cache=cache)
