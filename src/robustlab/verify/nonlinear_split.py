"""Branch and bound on the inputs of general nonlinearities ("Neural Network Verification with
Branch-and-Bound for General Nonlinearities", Shi et al. 2024, arXiv:2405.21063), for networks
whose activations are not (only) ReLUs: sigmoid, tanh, and any operation with a linear relaxation
on an interval (the ``Activation`` protocol: ``relax(l, u, alpha)``).

A domain restricts the input ``z`` of some neurons to sub-intervals ``[lo, hi]`` of their root
bounds. Its bound is CROWN over the root's intermediate bounds with those neurons relaxed on
their own intervals, plus each restriction as a Lagrangian term ``beta (z - lo)`` or
``beta (hi - z)`` with ``beta >= 0`` (as beta-CROWN does for ReLU splits, Wang et al. 2021): every
beta (and every alpha of an activation that has optimisable slopes) gives a sound bound on the
domain, and the optimisation only decides how tight. Branching splits one neuron's interval at
0 when it holds 0 (the inflection of S-shaped functions, the kink of ReLU), else at its middle;
the neuron is the one whose relaxation, re-relaxed on the two halves with the coefficients of the
last pass, improves the worse half's bound most (the BBPS estimate of Shi et al.).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from robustlab.bounds.alpha import alpha_crown
from robustlab.bounds.crown import backward, refine
from robustlab.bounds.graph import BoundGraph, Bounds
from robustlab.bounds.ops.base import Activation, InputRegion
from robustlab.verify.bab import BabStats, _stack_spec, hold_margin, pop_domains
from robustlab.verify.bab import refuted_rows as _refuted
from robustlab.verify.spec import Property

ITERATIONS = 3
LR_ALPHA, LR_BETA = 0.1, 0.05
TIGHTEN_MAX = 512  # neurons after the first split node re-bounded per domain
MIN_WIDTH = 1e-9  # intervals narrower than this (relative to 1 + |z|) are not split further


@dataclass
class Domains:
    """A batch of domains: per split node ``j`` the intervals ``lo[j], hi[j]`` (N, numel_j), the
    optimisable slopes per activation node, the multipliers per split node ((N, rows, numel_j)
    for each side), and the lower bounds."""

    lo: dict[int, Tensor]
    hi: dict[int, Tensor]
    alphas: dict[int, Tensor]
    beta_lo: dict[int, Tensor]
    beta_hi: dict[int, Tensor]
    lb: Tensor  # (N, rows)

    def __len__(self) -> int:
        return len(self.lb)

    def take(self, idx) -> Domains:
        def pick(d):
            return {k: v[idx] for k, v in d.items()}

        return Domains(
            pick(self.lo),
            pick(self.hi),
            pick(self.alphas),
            pick(self.beta_lo),
            pick(self.beta_hi),
            self.lb[idx],
        )

    @staticmethod
    def cat(parts: list[Domains]) -> Domains:
        parts = [p for p in parts if len(p)]

        def join(key):
            first = getattr(parts[0], key)
            return {k: torch.cat([getattr(p, key)[k] for p in parts]) for k in first}

        return Domains(
            join("lo"),
            join("hi"),
            join("alphas"),
            join("beta_lo"),
            join("beta_hi"),
            torch.cat([p.lb for p in parts]),
        )


def activations(graph: BoundGraph) -> dict[int, int]:
    """Activation node -> its input node, for activations not applied to the network input."""
    return {
        i: n.inputs[0]
        for i, n in enumerate(graph.nodes)
        if isinstance(n.op, Activation) and i > 0 and n.inputs[0] > 0
    }


def _domain_bounds(root, doms: Domains, n: int) -> dict[int, Bounds]:
    out: dict[int, Bounds] = {}
    for j, b in root.items():
        if j in doms.lo:
            shape = b.lower.shape[1:]
            out[j] = Bounds(doms.lo[j].view(n, *shape), doms.hi[j].view(n, *shape))
        else:
            lo = b.lower.expand(n, *b.lower.shape[1:])
            hi = b.upper.expand(n, *b.upper.shape[1:])
            out[j] = Bounds(lo, hi) if j else InputRegion(lo, hi)
    return out


def _tighten(graph, bounds: dict[int, Bounds], split_nodes: list[int]) -> None:
    """CROWN bounds of every split node after the first, on each domain (its earlier neurons
    relaxed on their own intervals), intersected with what the domain already has; only when
    those nodes are small (TIGHTEN_MAX neurons in all), else the root's bounds stay."""
    later = split_nodes[1:]
    if sum(math.prod(graph.nodes[j].shape) for j in later) > TIGHTEN_MAX:
        return
    for j in later:
        b = refine(graph, bounds, j, unstable_only=False)
        bounds[j] = b.intersect(bounds[j])


def _bound(graph, root, doms: Domains, C, iterations: int, record: dict | None = None):
    """Optimise alphas and betas for the batch; returns the best lower bounds (N, rows), the
    last pass's coefficients on the input, and the domains' bounds of every node."""
    n, rows = len(doms), C.shape[0]
    bounds = _domain_bounds(root, doms, n)
    with torch.no_grad():
        _tighten(graph, bounds, sorted(doms.lo))
    for j in doms.lo:  # the domains keep the tightened intervals
        doms.lo[j] = bounds[j].lower.reshape(n, -1)
        doms.hi[j] = bounds[j].upper.reshape(n, -1)
    Cn = C.expand(n, *C.shape)
    alphas = {r: a.clone().requires_grad_(True) for r, a in doms.alphas.items()}
    beta_lo = {j: b.clone().requires_grad_(True) for j, b in doms.beta_lo.items()}
    beta_hi = {j: b.clone().requires_grad_(True) for j, b in doms.beta_hi.items()}
    params = list(alphas.values()) + list(beta_lo.values()) + list(beta_hi.values())
    opt = (
        torch.optim.Adam(
            [
                {"params": list(alphas.values()), "lr": LR_ALPHA},
                {"params": list(beta_lo.values()) + list(beta_hi.values()), "lr": LR_BETA},
            ]
        )
        if params
        else None
    )
    best = doms.lb.clone()
    lin: dict = {}
    lb = best
    for it in range(max(1, iterations) if params else 1):
        if it:
            grads = torch.autograd.grad(-lb.sum(), params, allow_unused=True)
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            opt.step()
            with torch.no_grad():
                for r, a in alphas.items():
                    slope = getattr(graph.nodes[r].op, "slope", None)
                    if slope is not None:
                        a.clamp_(slope, 1.0)
                for b in list(beta_lo.values()) + list(beta_hi.values()):
                    b.clamp_(min=0.0)
        terms, const = {}, torch.zeros(n, rows, dtype=torch.float64)
        for j in beta_lo:
            shape = graph.nodes[j].shape
            # beta_lo (z - lo) >= 0 and beta_hi (hi - z) >= 0 on the domain, subtracted
            terms[j] = (beta_hi[j] - beta_lo[j]).view(n, rows, *shape)
            const = const + (beta_lo[j] * doms.lo[j][:, None]).sum(-1)
            const = const - (beta_hi[j] * doms.hi[j][:, None]).sum(-1)
        rec: dict = {}
        with torch.enable_grad():
            lb = backward(
                graph, bounds, graph.output, Cn, alphas, betas=terms, linear=lin, record=rec
            )
            lb = lb + const
        best = torch.maximum(best, lb.detach())
    if record is not None:
        record.update({r: t.detach() for r, t in rec.items()})
    doms.alphas = {r: a.detach() for r, a in alphas.items()}
    doms.beta_lo = {j: b.detach() for j, b in beta_lo.items()}
    doms.beta_hi = {j: b.detach() for j, b in beta_hi.items()}
    doms.lb = best
    return best, lin["A"].detach(), bounds


def _split_point(lo: Tensor, hi: Tensor) -> Tensor:
    return torch.where((lo < 0) & (hi > 0), torch.zeros_like(lo), (lo + hi) / 2)


def _contribution(op, a: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """The part of a lower bound that one neuron's relaxation on ``[lo, hi]`` gives, with
    coefficient ``a`` on its output: ``a+ (la z + lb) + a- (ua z + ub)`` at its worst ``z``."""
    la, lb, ua, ub = op.relax(lo, hi)
    pos, neg = a.clamp(min=0), a.clamp(max=0)
    slope = pos * la + neg * ua
    return pos * lb + neg * ub + torch.minimum(slope * lo, slope * hi)


def _branch(graph, doms: Domains, record: dict, slack: Tensor) -> list:
    """Per domain the (split node, flat index) to split, by the estimated improvement of the
    worse half; None where nothing is left to split."""
    n = len(doms)
    row = slack.argmax(1)  # the row closest to refuting its domain
    scores, where = [], []
    for r, j in activations(graph).items():
        if r not in record or j not in doms.lo:
            continue
        op = graph.nodes[r].op
        lo, hi = doms.lo[j], doms.hi[j]
        a = record[r].reshape(n, record[r].shape[1], -1)[torch.arange(n), row]
        p = _split_point(lo, hi)
        with torch.no_grad():
            now = _contribution(op, a, lo, hi)
            left = _contribution(op, a, lo, torch.maximum(p, lo))
            right = _contribution(op, a, torch.minimum(p, hi), hi)
        gain = torch.minimum(left, right) - now
        ok = (hi - lo > MIN_WIDTH * (1 + torch.maximum(lo.abs(), hi.abs()))) & (p > lo) & (p < hi)
        # a tiny preference for wide intervals breaks ties between neurons with no estimate
        score = torch.where(ok, gain.clamp_min(0) + 1e-9 * (hi - lo), -1.0)
        scores.append(score.nan_to_num(-1.0))
        where += [(j, k) for k in range(score.shape[1])]
    if not scores:
        return [None] * n
    allscore = torch.cat(scores, 1)
    best = allscore.argmax(1)
    ok = allscore[torch.arange(n), best] >= 0
    return [where[b] if o else None for b, o in zip(best.tolist(), ok.tolist(), strict=True)]


def _children(parents: Domains, picks: list[tuple[int, int]]) -> Domains:
    """Both halves of every parent's picked interval (lower half first)."""
    n = len(parents)

    def twice(d):
        return {k: torch.cat([v, v]) for k, v in d.items()}

    lo, hi = twice(parents.lo), twice(parents.hi)
    for j in {j for j, _ in picks}:
        rows = torch.tensor([i for i, (jj, _) in enumerate(picks) if jj == j])
        cols = torch.tensor([k for jj, k in picks if jj == j])
        p = _split_point(parents.lo[j][rows, cols], parents.hi[j][rows, cols])
        hi[j][rows, cols] = p
        lo[j][rows + n, cols] = p
    return Domains(
        lo,
        hi,
        twice(parents.alphas),
        twice(parents.beta_lo),
        twice(parents.beta_hi),
        parents.lb.repeat(2, 1),
    )


def nonlinear_split(
    graph: BoundGraph,
    prop: Property,
    shape: tuple[int, ...],
    model,
    *,
    deadline: float,
    batch: int = 32,
    stats: BabStats | None = None,
    margin: Tensor | None = None,
) -> tuple[str, Tensor | None]:
    """``("holds", None)``, ``("violated", x)`` (x float64, to be re-checked), ``("unknown",
    None)`` when a domain has nothing left to split, or ``("timeout", None)``. ``margin``: that
    of :func:`bab.hold_margin` (computed when not given)."""
    stats = stats or BabStats()
    C_all, d_all, groups = _stack_spec(prop)
    margin_all = hold_margin(graph, prop, shape) if margin is None else margin
    region = InputRegion(
        prop.lower.reshape(1, *shape).double(), prop.upper.reshape(1, *shape).double()
    )
    with torch.no_grad():
        final, root = alpha_crown(graph, region, C_all[None], bound_upper=False, deadline=deadline)
    root = {k: Bounds(b.lower.detach(), b.upper.detach()) for k, b in root.items()}
    acts = activations(graph)
    split_nodes = sorted(set(acts.values()))
    refuted0 = _refuted(final.lower.double(), d_all, margin_all)[0]
    todo = [g for g in groups if not bool(refuted0[g].any())]
    for g in todo:  # each disjunct of the unsafe region must be refuted on every domain
        C, d, m = C_all[g], d_all[g], margin_all[g]
        rows = C.shape[0]
        lo = {j: root[j].lower.reshape(1, -1).clone() for j in split_nodes}
        hi = {j: root[j].upper.reshape(1, -1).clone() for j in split_nodes}
        alphas = {}
        for r, j in acts.items():
            if graph.nodes[r].op.has_alpha:  # per row; some ops keep (lower, upper) on a last axis
                a = graph.nodes[r].op.alpha_init(root[j].lower, root[j].upper)
                alphas[r] = a[:, None].expand(1, rows, *a.shape[1:]).clone()
        zeros = {j: torch.zeros(1, rows, lo[j].shape[1], dtype=torch.float64) for j in lo}
        queue = Domains(
            lo, hi, alphas, zeros, {j: z.clone() for j, z in zeros.items()}, final.lower[:, g]
        )
        verdict, x = _search(
            graph, root, queue, (C, d, m), region, prop, shape, model, deadline, batch, stats
        )
        if verdict != "holds":
            return verdict, x
    return "holds", None


def _search(graph, root, queue, rows, region, prop, shape, model, deadline, batch, stats):
    C, d, margin = rows
    stack = [queue]
    while stack:
        if time.monotonic() > deadline:
            return "timeout", None
        parents = pop_domains(stack, batch)
        record: dict = {}
        lb, A, _ = _bound(graph, root, parents, C, ITERATIONS, record)
        stats.domains += len(parents)
        stats.bound_calls += 1
        refuted = _refuted(lb, d, margin)
        slack = lb - d - margin
        n = len(parents)
        row = torch.where(refuted, -torch.inf, slack).argmax(1)
        a = A.reshape(n, C.shape[0], -1)[torch.arange(n), row]
        lo, hi = region.lower.reshape(1, -1), region.upper.reshape(1, -1)
        cand = torch.where(a > 0, lo, hi)
        with torch.no_grad():
            y = model(cand.float().reshape(-1, *shape)).reshape(n, -1)
        v = prop.violation(y)
        if (v <= 0).any():
            return "violated", cand[v.argmin()]
        open_ = ~refuted.any(1)
        if not open_.any():
            continue
        parents = parents.take(open_.nonzero().squeeze(1))
        record = {r: t[open_] for r, t in record.items()}
        picks = _branch(graph, parents, record, slack[open_])
        if any(p is None for p in picks):
            return "unknown", None
        stack.append(_children(parents, picks))
        stats.max_queue = max(stats.max_queue, sum(len(c) for c in stack))
    return "holds", None
