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

A step function (sign) is split at its breakpoint into three domains on which it is constant:
``z < 0``, ``z = 0`` and ``z > 0``. The strict sides are closed intervals with an *open* flag at
the breakpoint: the bounds are computed over the closed interval (linear bounds are continuous,
so their extremes over the open side are those over its closure), while the step itself is
relaxed as the constant it is on the open side.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from robustlab.bounds.adam import Adam
from robustlab.bounds.backward import backward
from robustlab.bounds.graph import BoundGraph, Bounds, Node
from robustlab.bounds.intermediate import refine
from robustlab.bounds.ops.base import Activation, InputRegion
from robustlab.bounds.ops.nonlinear import Sign
from robustlab.errors import RobustlabError
from robustlab.verify.bab import BabStats
from robustlab.verify.disjuncts import refuted_rows as _refuted
from robustlab.verify.margins import stack_spec
from robustlab.verify.root import RootPass, start
from robustlab.verify.schedule import pop_domains
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
    # per split node of a step function: where its interval is open at the breakpoint (N, numel)
    open_lo: dict[int, Tensor] = field(default_factory=dict)
    open_hi: dict[int, Tensor] = field(default_factory=dict)

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
            pick(self.open_lo),
            pick(self.open_hi),
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
            join("open_lo"),
            join("open_hi"),
        )


@dataclass(eq=False)
class StrictSign(Sign):
    """``sign`` on domains where some inputs exclude 0 from one side: there it is the constant
    -1 (``open_hi``: z < 0 where the interval ends at 0) or 1 (``open_lo``: z > 0)."""

    open_lo: Tensor | None = None  # (N, *shape) bool
    open_hi: Tensor | None = None

    def _masks(self, l: Tensor) -> tuple[Tensor, Tensor]:
        def fit(m: Tensor) -> Tensor:
            return m.reshape(m.shape[0], *([1] * (l.dim() - m.dim())), *m.shape[1:])

        return fit(self.open_lo), fit(self.open_hi)

    def ibp(self, b):
        out = super().ibp(b)
        pos, neg = self._masks(b.lower)
        pos, neg = pos & (b.lower >= 0), neg & (b.upper <= 0)
        one = torch.ones_like(out.lower)
        lo = torch.where(pos, one, torch.where(neg, -one, out.lower))
        hi = torch.where(pos, one, torch.where(neg, -one, out.upper))
        return Bounds(lo, hi)

    def relax(self, l, u, alpha=None):
        la, lb, ua, ub = super().relax(l, u, alpha)
        pos, neg = self._masks(l)
        pos, neg = pos & (l >= 0), neg & (u <= 0)
        const = pos | neg
        value = torch.where(pos, torch.ones_like(lb), -torch.ones_like(lb))
        zero = torch.zeros_like(la)
        return (
            torch.where(const, zero, la),
            torch.where(const, value, lb),
            torch.where(const, zero, ua),
            torch.where(const, value, ub),
        )


def _strict_graph(graph: BoundGraph, doms: Domains) -> BoundGraph:
    """``graph`` with each sign whose input has open intervals in ``doms`` made strict there."""
    if not doms.open_lo:
        return graph
    nodes = list(graph.nodes)
    n = len(doms)
    for r, j in activations(graph).items():
        op = graph.nodes[r].op
        if isinstance(op, Sign) and j in doms.open_lo:
            shape = graph.nodes[j].shape
            strict = StrictSign(
                node=op.node,
                open_lo=doms.open_lo[j].reshape(n, *shape),
                open_hi=doms.open_hi[j].reshape(n, *shape),
            )
            old = nodes[r]
            nodes[r] = Node(old.name, strict, old.inputs, old.shape)
    return BoundGraph(tuple(nodes))


def _steps(graph: BoundGraph) -> set[int]:
    """The split nodes that feed a step function (sign)."""
    return {j for r, j in activations(graph).items() if isinstance(graph.nodes[r].op, Sign)}


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
    # a strict sign's open sides are per domain: no pass on a subset of the batch (refine does
    # that for few unstable neurons without slopes; an empty dict of slopes keeps the batch)
    strict = {} if any(isinstance(n.op, StrictSign) for n in graph.nodes) else None
    for j in later:
        b = refine(graph, bounds, j, unstable_only=False, alphas=strict)
        bounds[j] = b.intersect(bounds[j])


def _bound(graph, root, doms: Domains, C, iterations: int, record: dict | None = None):
    """Optimise alphas and betas for the batch; returns the best lower bounds (N, rows), the
    last pass's coefficients on the input, and the domains' bounds of every node."""
    n, rows = len(doms), C.shape[0]
    graph = _strict_graph(graph, doms)
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
    opt = Adam(
        [
            (list(alphas.values()), LR_ALPHA),
            (list(beta_lo.values()) + list(beta_hi.values()), LR_BETA),
        ]
    )
    best = doms.lb.clone()
    lin: dict = {}
    lb = best
    for it in range(max(1, iterations) if params else 1):
        if it:
            opt.step(torch.autograd.grad(-lb.sum(), params, allow_unused=True))
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
        if j in doms.open_lo:  # a step: split at its breakpoint until it is constant
            p = torch.zeros_like(lo)
        with torch.no_grad():
            now = _contribution(op, a, lo, hi)
            left = _contribution(op, a, lo, torch.maximum(p, lo))
            right = _contribution(op, a, torch.minimum(p, hi), hi)
        gain = torch.minimum(left, right) - now
        if j in doms.open_lo:
            ok = ~_resolved(lo, hi, doms.open_lo[j], doms.open_hi[j])
            gain = torch.where(ok, gain.clamp_min(0) + 1e-6, gain)
        else:
            wide = hi - lo > MIN_WIDTH * (1 + torch.maximum(lo.abs(), hi.abs()))
            ok = wide & (p > lo) & (p < hi)
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


def _resolved(lo: Tensor, hi: Tensor, open_lo: Tensor, open_hi: Tensor) -> Tensor:
    """Where a step (breakpoint 0) is constant on its interval."""
    zero = (lo == 0) & (hi == 0)
    return (hi < 0) | (lo > 0) | zero | ((hi == 0) & open_hi) | ((lo == 0) & open_lo)


def _children(parents: Domains, picks: list[tuple[int, int]]) -> Domains:
    """Both halves of every parent's picked interval (lower half first); a step's interval
    in three: below its breakpoint (open there), the breakpoint, above it (open), each kept
    where it is not empty."""
    n = len(parents)

    def thrice(d):
        return {k: torch.cat([v, v, v]) for k, v in d.items()}

    lo, hi = thrice(parents.lo), thrice(parents.hi)
    olo, ohi = thrice(parents.open_lo), thrice(parents.open_hi)
    keep = torch.ones(3 * n, dtype=torch.bool)
    keep[n : 2 * n] = False  # the middle copy is a step's breakpoint only
    for j in {j for j, _ in picks}:
        rows = torch.tensor([i for i, (jj, _) in enumerate(picks) if jj == j])
        cols = torch.tensor([k for jj, k in picks if jj == j])
        l0, h0 = parents.lo[j][rows, cols], parents.hi[j][rows, cols]
        if j not in parents.open_lo:
            p = _split_point(l0, h0)
            hi[j][rows, cols] = p
            lo[j][rows + 2 * n, cols] = p
            continue
        zero = torch.zeros_like(l0)
        hi[j][rows, cols] = zero  # z < 0
        ohi[j][rows, cols] = True
        keep[rows] = l0 < 0
        lo[j][rows + n, cols] = zero  # z = 0
        hi[j][rows + n, cols] = zero
        olo[j][rows + n, cols] = False
        ohi[j][rows + n, cols] = False
        keep[rows + n] = True
        lo[j][rows + 2 * n, cols] = zero  # z > 0
        olo[j][rows + 2 * n, cols] = True
        keep[rows + 2 * n] = h0 > 0
    children = Domains(
        lo,
        hi,
        thrice(parents.alphas),
        thrice(parents.beta_lo),
        thrice(parents.beta_hi),
        parents.lb.repeat(3, 1),
        olo,
        ohi,
    )
    return children.take(keep.nonzero().reshape(-1))


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
    first: RootPass | None = None,
) -> tuple[str, Tensor | None]:
    """``("holds", None)``, ``("violated", x)`` (x float64, to be re-checked), ``("unknown",
    None)`` when a domain has nothing left to split, or ``("timeout", None)``. ``margin``: that
    of :func:`bab.hold_margin` (computed when not given); ``first``: the region's CROWN pass
    (``root.RootPass``, as for ``relu_split``), whose bounds start alpha-CROWN."""
    stats = stats or BabStats()
    C_all, d_all, groups = stack_spec(prop)
    region = InputRegion(
        prop.lower.reshape(1, *shape).double(), prop.upper.reshape(1, *shape).double()
    )
    try:  # the root: the region's CROWN pass (given or made) and alpha-CROWN started from it
        first, lb0, root = start(graph, prop, shape, first, deadline)
    except RobustlabError:  # a relaxation that cannot be proven on this region
        return "unknown", None
    margin_all = first.margin if margin is None else margin
    root = {k: Bounds(b.lower.detach(), b.upper.detach()) for k, b in root.items()}
    acts = activations(graph)
    split_nodes = sorted(set(acts.values()))
    refuted0 = _refuted(lb0.double(), d_all, margin_all)[0]
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
        shut = {j: torch.zeros_like(lo[j], dtype=torch.bool) for j in _steps(graph)}
        queue = Domains(
            lo, hi, alphas, zeros, {j: z.clone() for j, z in zeros.items()}, lb0[:, g],
            shut, {j: m.clone() for j, m in shut.items()},
        )  # fmt: skip
        try:
            verdict, x = _search(
                graph, root, queue, (C, d, m), region, prop, shape, model, deadline, batch, stats
            )
        except RobustlabError:  # a relaxation that cannot be proven on some domain (a
            return "unknown", None  # reciprocal of a softmax's sum near 0 overflowing, say)
        if verdict != "holds":
            return verdict, x
    return "holds", None


def _search(graph, root, queue, rows, region, prop, shape, model, deadline, batch, stats):
    C, d, margin = rows
    stack = [queue]
    stuck = 0  # domains that cannot be split further
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
        left = [i for i, p in enumerate(picks) if p is None]
        if left:  # nothing left to split there (a step constant on every side, say):
            stuck += len(left)  # the other domains go on, a violation may lie among them
            keep = [i for i, p in enumerate(picks) if p is not None]
            if not keep:
                continue
            parents = parents.take(torch.tensor(keep))
            picks = [picks[i] for i in keep]
        stack.append(_children(parents, picks))
        stats.max_queue = max(stats.max_queue, sum(len(c) for c in stack))
    return ("unknown" if stuck else "holds"), None
