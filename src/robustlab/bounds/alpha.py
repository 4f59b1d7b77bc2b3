"""alpha-CROWN: CROWN with the lower slopes of unstable ReLU neurons optimised by gradient ascent
(Xu et al. 2021, "Fast and Complete", arXiv:2011.13824), for the final bounds and, jointly, for
every intermediate layer whose bounds a relaxation uses."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

import torch
from torch import Tensor

from robustlab.bounds import rounding, window
from robustlab.bounds.adam import Adam
from robustlab.bounds.backward import backward, two_sided
from robustlab.bounds.crown import crown
from robustlab.bounds.graph import BoundGraph, Bounds
from robustlab.bounds.ibp import spec_bounds
from robustlab.bounds.intermediate import needs_bounds
from robustlab.bounds.ops.activation import ReLU, SShaped
from robustlab.bounds.ops.base import InputRegion, LinearOp
from robustlab.bounds.ops.pool import MaxPool
from robustlab.bounds.plan import cone
from robustlab.bounds.rows import identity_rows

ITERATIONS = 20
LR = 0.5
DECAY = 0.98


def _unstable_index(b: Bounds, unstable_only: bool) -> Tensor:
    batch = b.lower.shape[0]
    mask = ((b.lower < 0) & (b.upper > 0)) if unstable_only else (b.lower < b.upper)
    return mask.reshape(batch, -1).any(0).nonzero().squeeze(1)


def alpha_crown(
    graph: BoundGraph,
    region: Bounds,
    C: Tensor | None = None,
    *,
    iterations: int = ITERATIONS,
    lr: float = LR,
    optimize_intermediate: bool = True,
    bound_upper: bool = True,
    stop_when_positive: bool = False,
    deadline: float | None = None,
    intermediate: Mapping[int, Bounds] | None = None,
    in_cone: bool = False,
    windows: bool = True,
) -> tuple[Bounds, dict[int, Bounds]]:
    """alpha-CROWN bounds of ``C @ output``; never looser than CROWN (the best of every
    iteration, starting from CROWN's own bounds, is kept). With ``stop_when_positive`` the
    optimisation stops as soon as every lower bound is positive (a verified specification), and
    at ``deadline`` (``time.monotonic()``) in any case.

    ``intermediate``: every node's CROWN bounds on this very region, from a pass made already
    (``crown``'s second result, or ``bab.bound_boxes``' ``out``): that pass is not repeated,
    only C's rows are bounded on them before the slopes are optimised. ``in_cone``: only the
    neurons that reach C's rows (``plan.cone``) get CROWN and optimised intermediate bounds
    (the same final bounds for less work; the others keep the bounds they start from).
    ``windows``: rows on a feature map's neurons kept on their receptive field (window.py)."""
    out = graph.output
    lower = region.lower
    batch = lower.shape[0]
    if C is None:
        shape = graph.nodes[out].shape
        C = identity_rows(shape, torch.arange(math.prod(shape)), batch, lower)
    C = C.to(lower.dtype)
    with torch.no_grad():
        if intermediate is None:
            best_final, bounds = crown(
                graph, region, C, bound_upper=bound_upper, in_cone=in_cone, windows=windows
            )
        else:
            bounds = {**intermediate, 0: region}
            best_final = _final(graph, bounds, C, bound_upper)
    slopes = [i for i, n in enumerate(graph.nodes) if getattr(n.op, "has_alpha", False)]
    done = stop_when_positive and bool((best_final.lower > 0).all())
    if not slopes or iterations <= 0 or done:
        return best_final, bounds
    need = needs_bounds(graph)
    after = list(graph.plan.after_nonlinear)
    starts = {}
    # with other nonlinearities than ReLU / sigmoid / tanh / max pooling (transformers), only
    # ReLU inputs: optimising every intermediate relaxation there costs ~20x CROWN per step for
    # little (zoo:vit, 4 points: 56 s vs 2.7 s; margin 1.8084 vs 1.8043, CROWN 1.8034)
    only_relu = bool(guarded(graph))
    within = cone(graph, out, C) if in_cone and optimize_intermediate else None
    if optimize_intermediate:
        for j, unstable_only in need.items():
            if after[j] and j != out and (unstable_only or not only_relu):
                idx = _unstable_index(bounds[j], unstable_only)
                if within is not None:  # no neuron outside the cone reaches the rows
                    idx = idx[within[j][idx]] if j in within else idx[:0]
                if len(idx):
                    starts[j] = (idx, unstable_only)
    best = {i: Bounds(b.lower.detach(), b.upper.detach()) for i, b in bounds.items()}
    best[0] = region
    # the slopes are optimised in float32 (the iterations only steer; their bounds are not kept)
    # and evaluated once, at the end, in the requested precision
    work = torch.float32
    steer = {i: rounding.outward(b, work) for i, b in best.items()}
    steer[0] = InputRegion(
        steer[0].lower,
        steer[0].upper,
        None if getattr(region, "center", None) is None else region.center.to(work),
        getattr(region, "l2_eps", None),
    )
    C_work = C.to(work)
    alphas: dict[int, dict[int, Tensor]] = {}
    params = []
    for s, rows in [(s, 2 * len(idx)) for s, (idx, _) in starts.items()] + [
        (out, (2 if bound_upper else 1) * C.shape[1])
    ]:
        alphas[s] = {}
        before = _ancestors(graph, s)
        for r in slopes:
            if r not in before:  # its relaxation is not on the way back from s
                continue
            init = graph.nodes[r].op.alpha_start(*[best[j] for j in graph.nodes[r].inputs])
            if init is None:  # no neuron with a choice
                continue
            init = init[:, None].to(work)
            a = init.expand(batch, rows, *init.shape[2:]).clone().requires_grad_(True)
            alphas[s][r] = a
            params.append(a)
    if not params:
        return best_final, bounds
    opt = Adam([(params, lr)], decay=DECAY)
    best_loss, snapshot = math.inf, None
    with torch.enable_grad(), rounding.ignored():
        for _ in range(iterations):
            if deadline is not None and time.monotonic() > deadline:
                break
            cur, fin = _evaluate(graph, steer, starts, alphas, C_work, bound_upper, windows)
            with torch.no_grad():
                steer = {0: steer[0]} | {
                    i: steer[i].intersect(Bounds(c.lower.detach(), c.upper.detach()))
                    for i, c in list(cur.items())[1:]
                }
            if stop_when_positive and bool((fin.lower > 0).all()):
                break  # these slopes verify (re-evaluated soundly below)
            loss = fin.upper.sum() - fin.lower.sum() if bound_upper else -fin.lower.sum()
            if float(loss.detach()) < best_loss:  # the slopes of the best iteration so far
                best_loss = float(loss.detach())
                snapshot = _copy(alphas)
            grads = torch.autograd.grad(loss, params)  # never touches the model's own gradients
            opt.step([torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0) for g in grads])
            with torch.no_grad():
                for s in alphas:
                    for r, a in alphas[s].items():
                        graph.nodes[r].op.clamp_alpha_(a)
    # the last slopes and the best iteration's, evaluated in the requested precision against
    # the sound bounds; the elementwise best of the two is kept
    lo_best, hi_best = best_final.lower, best_final.upper
    with torch.no_grad():
        for cand in [alphas] if snapshot is None else [alphas, snapshot]:
            cand = {s: {r: a.to(lower.dtype) for r, a in d.items()} for s, d in cand.items()}
            cur, fin = _evaluate(graph, best, starts, cand, C, bound_upper, windows, sound=True)
            lo_best = torch.maximum(lo_best, fin.lower)
            hi_best = torch.minimum(hi_best, fin.upper)
            best = {0: best[0]} | {i: best[i].intersect(c) for i, c in list(cur.items())[1:]}
    final = Bounds(lo_best, hi_best).intersect(spec_bounds(graph, best, C))
    return final, best


def _final(graph: BoundGraph, bounds: Mapping[int, Bounds], C: Tensor, bound_upper: bool) -> Bounds:
    """CROWN bounds of ``C @ output`` on every node's ``bounds`` (``crown``'s last step)."""
    if bound_upper:
        final = two_sided(graph, bounds, graph.output, C)
    else:
        lb = backward(graph, bounds, graph.output, C)
        final = Bounds(lb, torch.full_like(lb, torch.inf))
    return final.intersect(spec_bounds(graph, bounds, C))


def _ancestors(graph: BoundGraph, s: int) -> set[int]:
    """The nodes that node s depends on (s excluded)."""
    seen, stack = set(), list(graph.nodes[s].inputs)
    while stack:
        i = stack.pop()
        if i not in seen:
            seen.add(i)
            stack.extend(graph.nodes[i].inputs)
    return seen


def _copy(alphas: dict) -> dict:
    return {s: {r: a.detach().clone() for r, a in d.items()} for s, d in alphas.items()}


def guarded(graph: BoundGraph) -> set[int]:
    """Nodes that are inputs of operations other than ReLU, sigmoid, tanh and max pooling."""
    return {
        j
        for n in graph.nodes[1:]
        if not isinstance(n.op, (LinearOp, ReLU, SShaped, MaxPool))
        for j in n.inputs
    }


def _evaluate(
    graph, best, starts, alphas, C, bound_upper: bool, windows: bool, sound: bool = False
) -> tuple[dict, Bounds]:
    """One pass with the current slopes: every node's bounds (intersected with ``best``; while
    optimising (``sound=False``) the refined ones are replaced by the optimised bounds, so
    gradients reach them) and the final ones."""
    batch = C.shape[0]
    lower = best[0].lower
    cur: dict[int, Bounds] = {0: best[0]}
    guard = guarded(graph)
    for i, node in enumerate(graph.nodes[1:], 1):
        b = rounding.safe_ibp(node.op, *[cur[j] for j in node.inputs]).intersect(best[i])
        if i in starts:
            idx, _ = starts[i]
            rows = (
                window.identity_windows(node.shape, idx, batch, lower)
                if windows and window.usable(node.shape)
                else identity_rows(node.shape, idx, batch, lower)
            )
            nb = two_sided(graph, cur, i, rows, alphas[i])
            lo = b.lower.reshape(batch, -1).clone()
            hi = b.upper.reshape(batch, -1).clone()
            # the optimised bounds themselves, not intersected with earlier ones: an
            # intersection would cut the gradient wherever interval bounds are tighter
            # (the best bounds of every iteration are kept separately)
            if sound:
                lo[:, idx] = torch.maximum(nb.lower, lo[:, idx])
                hi[:, idx] = torch.minimum(nb.upper, hi[:, idx])
            elif i not in guard:
                lo[:, idx], hi[:, idx] = nb.lower, nb.upper
            else:  # inputs of functions with a domain or of products stay inside the sound
                # bounds (no domain errors, no overflow), with the optimised bounds' gradient
                lo[:, idx] = nb.lower + (torch.maximum(nb.lower, lo[:, idx]) - nb.lower).detach()
                hi[:, idx] = nb.upper + (torch.minimum(nb.upper, hi[:, idx]) - nb.upper).detach()
            b = Bounds(lo.reshape(b.lower.shape), hi.reshape(b.upper.shape))
        cur[i] = b
    out = graph.output
    if bound_upper:
        return cur, two_sided(graph, cur, out, C, alphas[out])
    lb = backward(graph, cur, out, C, alphas[out])
    return cur, Bounds(lb, torch.full_like(lb, torch.inf))
