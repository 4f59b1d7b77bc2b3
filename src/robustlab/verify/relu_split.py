"""Branch and bound by ReLU splitting with split constraints in the bound: beta-CROWN (Wang et al.
2021, arXiv:2103.06624), for networks with many inputs (images).

A domain fixes the sign of some ReLU inputs (``z >= 0`` or ``z <= 0``). Its bound is CROWN over the
root's intermediate bounds clamped by the splits, with each split constraint added through a
Lagrange multiplier ``beta >= 0`` (the term ``-beta * s * z`` on the split node); the lower slopes
(alpha) and the multipliers are optimised together by projected gradient ascent, batched over many
domains. Every choice of alpha in [slope, 1] and of beta >= 0 gives a sound bound, so the
optimisation only decides how tight it is. Branching takes the unstable neuron whose upper
relaxation costs the bound most (the BaBSR intercept score, Bunel et al. 2020).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from robustlab.bounds.adam import Adam
from robustlab.bounds.backward import backward
from robustlab.bounds.graph import BoundGraph, Bounds
from robustlab.bounds.ops.activation import ReLU
from robustlab.bounds.ops.base import InputRegion
from robustlab.verify.bab import BabStats
from robustlab.verify.margins import stack_spec
from robustlab.verify.root import RootPass, start
from robustlab.verify.schedule import pop_domains
from robustlab.verify.spec import Property

ITERATIONS = 3  # bound passes per batch of domains (children start from the parent's alpha, beta)
LR_ALPHA, LR_BETA = 0.1, 0.05


@dataclass
class Domains:
    """A batch of domains: per split node ``j`` (a ReLU input) the signs (N, numel_j) in {-1, 0, 1},
    the optimisable slopes per ReLU node, the multipliers per split node, and the lower bounds."""

    signs: dict[int, Tensor]
    alphas: dict[int, Tensor]
    betas: dict[int, Tensor]
    lb: Tensor  # (N, rows)

    def __len__(self) -> int:
        return len(self.lb)

    def take(self, idx: Tensor) -> Domains:
        def pick(d: dict[int, Tensor]) -> dict[int, Tensor]:
            return {k: v[idx] for k, v in d.items()}

        return Domains(pick(self.signs), pick(self.alphas), pick(self.betas), self.lb[idx])

    @staticmethod
    def cat(parts: list[Domains]) -> Domains:
        parts = [p for p in parts if len(p)]

        def join(key: str) -> dict[int, Tensor]:
            first = getattr(parts[0], key)
            return {k: torch.cat([getattr(p, key)[k] for p in parts]) for k in first}

        return Domains(
            join("signs"), join("alphas"), join("betas"), torch.cat([p.lb for p in parts])
        )


def _relus(graph: BoundGraph) -> dict[int, int]:
    """ReLU node -> its input node (the split node)."""
    return {i: n.inputs[0] for i, n in enumerate(graph.nodes) if isinstance(n.op, ReLU) and i > 0}


def _clamped(root: dict[int, Bounds], signs: dict[int, Tensor], n: int) -> dict[int, Bounds]:
    """The root bounds for ``n`` domains, with each split neuron's bounds cut at zero."""
    out: dict[int, Bounds] = {}
    for j, b in root.items():
        lo = b.lower.expand(n, *b.lower.shape[1:])
        hi = b.upper.expand(n, *b.upper.shape[1:])
        if j in signs:
            s = signs[j].view(n, *lo.shape[1:])
            lo = torch.where(s > 0, lo.clamp_min(0), lo)
            hi = torch.where(s < 0, hi.clamp_max(0), hi)
        out[j] = Bounds(lo, hi) if j else InputRegion(lo, hi)
    return out


def _bound(graph, root, doms: Domains, C, iterations: int, record: dict | None = None):
    """Optimise alpha and beta for the batch; returns the best lower bounds (N, rows), the
    coefficients on the input of the last iterate, and (in ``record``) each ReLU's coefficients."""
    n, rows = len(doms), C.shape[0]
    bounds = _clamped(root, doms.signs, n)
    Cn = C.expand(n, *C.shape)
    alphas = {r: a.clone().requires_grad_(True) for r, a in doms.alphas.items()}
    betas = {j: b.clone().requires_grad_(True) for j, b in doms.betas.items()}
    params = list(alphas.values()) + list(betas.values())
    opt = Adam([(list(alphas.values()), LR_ALPHA), (list(betas.values()), LR_BETA)])
    best = doms.lb.clone()
    lin: dict = {}
    lb = best
    # a gradient step between passes, none after the last (one pass when nothing is optimised)
    for it in range(max(1, iterations) if params else 1):
        if it:
            opt.step(torch.autograd.grad(-lb.sum(), params, allow_unused=True))
            with torch.no_grad():
                for r, a in alphas.items():
                    a.clamp_(graph.nodes[r].op.slope, 1.0)
                for b in betas.values():
                    b.clamp_(min=0.0)
        terms = {
            j: -(b * doms.signs[j][:, None].to(b.dtype)).view(n, rows, *graph.nodes[j].shape)
            for j, b in betas.items()
        }
        rec: dict = {}
        with torch.enable_grad():
            lb = backward(
                graph, bounds, graph.output, Cn, alphas, betas=terms, linear=lin, record=rec
            )
        best = torch.maximum(best, lb.detach())
    if record is not None:
        record.update({r: t.detach() for r, t in rec.items()})
    doms.alphas = {r: a.detach() for r, a in alphas.items()}
    doms.betas = {j: b.detach() for j, b in betas.items()}
    doms.lb = best
    return best, lin["A"].detach(), bounds


def _branch(graph, bounds, doms: Domains, record: dict, slack: Tensor) -> list:
    """Per domain, the (split node, flat index) of the unstable neuron with the largest BaBSR
    intercept score; index -1 where no unstable neuron is left."""
    n = len(doms)
    row = slack.argmax(1)  # the row closest to refuting its domain
    scores, where = [], []
    for r, j in _relus(graph).items():
        if r not in record:
            continue
        lo, hi = bounds[j].lower.reshape(n, -1), bounds[j].upper.reshape(n, -1)
        a = record[r].reshape(n, record[r].shape[1], -1)[torch.arange(n), row]
        unstable = (lo < 0) & (hi > 0) & (doms.signs[j] == 0)
        intercept = -lo * hi / (hi - lo).clamp_min(1e-12)
        score = torch.where(unstable, a.clamp(max=0).abs() * intercept + 1e-9 * intercept, -1.0)
        scores.append(score)
        where += [(j, k) for k in range(score.shape[1])]
    allscore = torch.cat(scores, 1)
    best = allscore.argmax(1)
    ok = allscore[torch.arange(n), best] >= 0
    return [where[b] if o else None for b, o in zip(best.tolist(), ok.tolist(), strict=True)]


def relu_split(
    graph: BoundGraph,
    prop: Property,
    shape: tuple[int, ...],
    model,
    *,
    deadline: float,
    batch: int = 64,
    stats: BabStats | None = None,
    margin: Tensor | None = None,
    first: RootPass | None = None,
) -> tuple[str, Tensor | None]:
    """``("holds", None)``, ``("violated", x)`` (x float64, to be re-checked), ``("unknown",
    None)`` when a domain has no unstable neuron left, or ``("timeout", None)``. ``first``:
    the region's CROWN pass (:mod:`robustlab.verify.root`; made here when not given or not of
    this box and these rows): its intermediate bounds start alpha-CROWN, its margins are those
    of :func:`bab.hold_margin` unless ``margin`` is given."""
    stats = stats or BabStats()
    C_all, d_all, groups = stack_spec(prop)
    # one alpha-CROWN pass for every row: the root's intermediate bounds
    first, lb0, root = start(graph, prop, shape, first, deadline)
    margin_all = first.margin if margin is None else margin
    region = InputRegion(
        prop.lower.reshape(1, *shape).double(), prop.upper.reshape(1, *shape).double()
    )
    root = {k: Bounds(b.lower.detach(), b.upper.detach()) for k, b in root.items()}
    relus = _relus(graph)
    slack0 = lb0[0].double() - d_all - margin_all
    todo = [g for g in groups if not bool((slack0[g] > 0).any())]
    todo.sort(key=lambda g: float(slack0[g].max()))  # the hardest first: it decides the answer
    for g in todo:  # each disjunct of the unsafe region must be refuted on every domain
        C, d = C_all[g], d_all[g]
        margin = margin_all[g]
        rows = C.shape[0]
        signs = {
            j: torch.zeros(1, root[j].lower[0].numel(), dtype=torch.int8) for j in relus.values()
        }
        alphas = {
            r: graph.nodes[r]
            .op.alpha_init(root[j].lower, root[j].upper)[:, None]
            .expand(1, rows, *root[j].lower.shape[1:])
            .clone()
            for r, j in relus.items()
        }
        betas = {j: torch.zeros(1, rows, s.shape[1], dtype=torch.float64) for j, s in signs.items()}
        queue = Domains(signs, alphas, betas, lb0[:, g].double())
        verdict, x = _search(
            graph, root, queue, C, d, margin, region, prop, shape, model, deadline, batch, stats
        )
        if verdict != "holds":
            return verdict, x
    return "holds", None


def _children(parents: Domains, picks: list[tuple[int, int]]) -> Domains:
    """Both children of every parent: the picked neuron fixed active (first half), inactive."""
    n = len(parents)
    twice = lambda d: {k: torch.cat([v, v]) for k, v in d.items()}  # noqa: E731
    signs = twice(parents.signs)
    for j in {j for j, _ in picks}:
        rows = torch.tensor([i for i, (jj, _) in enumerate(picks) if jj == j])
        cols = torch.tensor([k for jj, k in picks if jj == j])
        signs[j][rows, cols] = 1
        signs[j][rows + n, cols] = -1
    return Domains(signs, twice(parents.alphas), twice(parents.betas), parents.lb.repeat(2, 1))


def _search(graph, root, queue, C, d, margin, region, prop, shape, model, deadline, batch, stats):
    stack = [queue]  # chunks of domains, each bounded when it is taken
    while stack:
        if time.monotonic() > deadline:
            return "timeout", None
        parents = pop_domains(stack, batch)
        record: dict = {}
        lb, A, bounds = _bound(graph, root, parents, C, ITERATIONS, record)
        stats.domains += len(parents)
        stats.bound_calls += 1
        slack = lb - d - margin
        # counterexample search: the box corner minimising each domain's weakest linear bound
        n = len(parents)
        row = slack.argmin(1)
        a = A.reshape(n, C.shape[0], -1)[torch.arange(n), row]
        lo, hi = region.lower.reshape(1, -1), region.upper.reshape(1, -1)
        cand = torch.where(a > 0, lo, hi)
        with torch.no_grad():
            y = model(cand.float().reshape(-1, *shape)).reshape(n, -1)
        v = prop.violation(y)
        if (v <= 0).any():
            return "violated", cand[v.argmin()]
        open_ = ~(slack > 0).any(1)
        if not open_.any():
            continue
        parents = parents.take(open_.nonzero().squeeze(1))
        record = {r: t[open_] for r, t in record.items()}
        bounds = {j: Bounds(b.lower[open_], b.upper[open_]) for j, b in bounds.items()}
        picks = _branch(graph, bounds, parents, record, slack[open_])
        if any(p is None for p in picks):
            return "unknown", None
        stack.append(_children(parents, picks))
        stats.max_queue = max(stats.max_queue, sum(len(c) for c in stack))
    return "holds", None
