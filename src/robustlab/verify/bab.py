"""Branch and bound by input splitting (for networks with few inputs, such as ACAS Xu): batched
CROWN bounds on many sub-boxes at once; each undecided box is split in two along the input whose
contribution to the bound is largest (|coefficient| x width, as in "smart" input splitting)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from robustlab.bounds.crown import backward, intermediate_bounds
from robustlab.bounds.forward import forward_bounds
from robustlab.bounds.forward import supported as forward_ok
from robustlab.bounds.graph import BoundGraph
from robustlab.bounds.ops.base import InputRegion
from robustlab.verify.spec import Property

HOLD_MARGIN = 1e-6  # a disjunct is infeasible only when its bound clears d by this (x max(1, |d|))


@dataclass
class BabStats:
    domains: int = 0
    max_queue: int = 0
    bound_calls: int = 0


def _stack_spec(prop: Property) -> tuple[Tensor, Tensor, list[slice]]:
    rows, rhs, groups, k = [], [], [], 0
    for dj in prop.disjuncts:
        rows.append(dj.C)
        rhs.append(dj.d)
        groups.append(slice(k, k + len(dj.d)))
        k += len(dj.d)
    return torch.cat(rows), torch.cat(rhs), groups


def bound_boxes(
    graph: BoundGraph, lo: Tensor, hi: Tensor, C: Tensor, shape, intermediate: str = "crown"
) -> tuple[Tensor, Tensor]:
    """CROWN lower bounds of ``C y`` on each box (N, rows) and their input coefficients.

    Intermediate bounds: ``"crown"`` (backward passes for every unstable neuron, after forward
    linear bounds) or ``"forward"`` (forward linear bounds only: far cheaper, far looser)."""

    n = len(lo)
    region = InputRegion(lo.reshape(n, *shape), hi.reshape(n, *shape))
    with torch.no_grad():
        if intermediate == "forward" and forward_ok(graph):
            bounds = forward_bounds(graph, region)
        else:
            prior = forward_bounds(graph, region) if forward_ok(graph) else None
            bounds = intermediate_bounds(graph, region, "crown", prior=prior)
        lin: dict = {}
        lb = backward(graph, bounds, graph.output, C.expand(n, *C.shape), linear=lin)
    return lb, lin["A"].reshape(n, C.shape[0], -1)


def infeasible(lb: Tensor, d: Tensor, groups: list[slice]) -> Tensor:
    """(N, disjuncts): disjunct proven unreachable on the box (some row's bound exceeds d)."""
    margin = HOLD_MARGIN * d.abs().clamp_min(1.0)
    ok = lb > d + margin
    return torch.stack([ok[:, g].any(1) for g in groups], 1)


def input_split(
    graph: BoundGraph,
    prop: Property,
    shape: tuple[int, ...],
    model,
    *,
    deadline: float,
    batch: int = 1024,
    stats: BabStats | None = None,
    intermediate: str = "crown",
) -> tuple[str, Tensor | None]:
    """``("holds", None)``, ``("violated", x)`` (x float64, to be re-checked), or
    ``("timeout", None)``."""
    stats = stats or BabStats()
    C, d, groups = _stack_spec(prop)
    lo_q, hi_q = prop.lower[None].clone(), prop.upper[None].clone()
    # per box: which disjuncts are still open
    open_q = torch.ones(1, len(groups), dtype=torch.bool)
    while len(lo_q):
        if time.monotonic() > deadline:
            return "timeout", None
        lo, hi, op = lo_q[:batch], hi_q[:batch], open_q[:batch]
        lo_q, hi_q, open_q = lo_q[batch:], hi_q[batch:], open_q[batch:]
        stats.domains += len(lo)
        stats.bound_calls += 1
        lb, A = bound_boxes(graph, lo, hi, C, shape, intermediate)
        op = op & ~infeasible(lb, d, groups)
        undecided = op.any(1)
        if not undecided.any():
            continue
        lo, hi, op, lb, A = lo[undecided], hi[undecided], op[undecided], lb[undecided], A[undecided]
        # a cheap search: the box centre and the corner minimising the weakest open row's bound
        slack = lb - d
        slack_open = torch.where(_rows_open(op, groups, C.shape[0]), slack, torch.inf)
        worst = slack_open.argmin(1)
        a = A[torch.arange(len(A)), worst]
        corner = torch.where(a > 0, lo, hi)
        cand = torch.cat([corner, (lo + hi) / 2])
        with torch.no_grad():
            y = model(cand.float().reshape(-1, *shape)).reshape(len(cand), -1)
        v = prop.violation(y)
        if (v <= 0).any():
            return "violated", cand[v.argmin()]
        # split along the input with the largest |coefficient| x width
        score = a.abs() * (hi - lo)
        dim = score.argmax(1)
        mid = (lo.gather(1, dim[:, None]) + hi.gather(1, dim[:, None])) / 2
        lo2, hi2 = lo.clone(), hi.clone()
        hi1 = hi.clone().scatter_(1, dim[:, None], mid)
        lo2.scatter_(1, dim[:, None], mid)
        lo_q = torch.cat([lo, lo2, lo_q])
        hi_q = torch.cat([hi1, hi2, hi_q])
        open_q = torch.cat([op, op, open_q])
        stats.max_queue = max(stats.max_queue, len(lo_q))
    return "holds", None


def _rows_open(op: Tensor, groups: list[slice], rows: int) -> Tensor:
    mask = torch.zeros(len(op), rows, dtype=torch.bool)
    for k, g in enumerate(groups):
        mask[:, g] = op[:, k : k + 1]
    return mask
