"""A region's first bound pass, kept for the passes after it. The engine's CROWN pass, branch and
bound's hold margin, alpha-CROWN's start and branch and bound's root all read the same
intermediate bounds, a deterministic function of the network, the box and the split set (none at
a root): computed once, they are handed on, so the later passes only bound their own rows and
optimise (VNN-COMP 2023 vit, ibp_3_3_8: three passes of 4-13 s each became one).

An entry is matched exactly on the box and the property's rows (their float64 values), never
reused for another box, other rows, or a domain with splits (those derive their bounds from the
root's, in the branch and bound itself)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from robustlab.bounds.alpha import alpha_crown
from robustlab.bounds.cut import CutPasses
from robustlab.bounds.graph import BoundGraph, Bounds
from robustlab.bounds.ops.base import InputRegion
from robustlab.verify import bab
from robustlab.verify.margins import stack_spec
from robustlab.verify.spec import Property

MAX_NUMBERS = 2**24  # float64 bound entries a cache keeps in all (128 MiB)


@dataclass(frozen=True)
class RootPass:
    """One region's CROWN pass: its box (flat, float64), the property's rows ``C`` (rows,
    n_outputs) and ``d`` (rows,) as :func:`margins.stack_spec` stacks them, every node's bounds
    (batch 1; CROWN where a relaxation reads them, for the neurons that reach the outputs the
    rows read), the lower bounds of ``C y`` (rows,) and their hold margins (rows,)."""

    lower: Tensor
    upper: Tensor
    C: Tensor
    d: Tensor
    bounds: dict[int, Bounds]
    lb: Tensor
    margin: Tensor
    alpha: tuple[Tensor, dict[int, Bounds]] | None = None  # alpha-CROWN's (lb, bounds), if run

    def numbers(self) -> int:
        """How many bound entries it keeps."""
        own = sum(2 * b.lower.numel() for b in self.bounds.values())
        return own * (1 if self.alpha is None else 2)

    def matches(self, lower: Tensor, upper: Tensor, C: Tensor, d: Tensor) -> bool:
        """Whether it is the pass of exactly this box and these rows."""
        pairs = ((self.lower, lower), (self.upper, upper), (self.C, C), (self.d, d))
        return all(a.shape == b.shape and torch.equal(a, b.to(a.dtype)) for a, b in pairs)


def compute(graph: BoundGraph, prop: Property, shape: tuple[int, ...]) -> RootPass:
    """The CROWN pass of ``prop``'s box and rows (:func:`bab.bounds_and_margins`)."""
    C, d, _ = stack_spec(prop)
    lo, hi = prop.lower[None].double(), prop.upper[None].double()
    bounds: dict = {}
    lb, margin = bab.bounds_and_margins(graph, lo, hi, C[None], d[None], shape, out=bounds)
    return RootPass(lo[0], hi[0], C, d, bounds, lb[0], margin[0])


def start(
    graph: BoundGraph,
    prop: Property,
    shape: tuple[int, ...],
    first: RootPass | None,
    deadline: float | None = None,
) -> tuple[RootPass, Tensor, dict[int, Bounds]]:
    """A branch and bound's root: the region's CROWN pass (``first`` where it is of this box and
    these rows, else computed), alpha-CROWN's lower bounds of the rows (1, rows) and every
    node's bounds, started from that pass's intermediate bounds and optimised only in the rows'
    cone (or the pass's own alpha-CROWN results, where it has them)."""
    C, d, _ = stack_spec(prop)
    if first is None or not first.matches(prop.lower, prop.upper, C, d):
        first = compute(graph, prop, shape)
    if first.alpha is not None:
        lb, bounds = first.alpha
        return first, lb[None], bounds
    region = InputRegion(
        prop.lower.reshape(1, *shape).double(), prop.upper.reshape(1, *shape).double()
    )
    with torch.no_grad():
        final, bounds = alpha_crown(
            graph,
            region,
            C[None],
            bound_upper=False,
            deadline=deadline,
            intermediate=first.bounds,
            in_cone=True,
        )
    return first, final.lower, bounds


def split(bounds: dict[int, Bounds], i: int, n: int) -> dict[int, Bounds]:
    """Box ``i``'s bounds out of a pass on ``n`` boxes (copies, so the batch can be freed)."""

    def one(t: Tensor) -> Tensor:
        return t[i : i + 1] if n == 1 else t[i : i + 1].clone()

    out: dict[int, Bounds] = {}
    for j, b in bounds.items():
        if isinstance(b, InputRegion):
            center = None if b.center is None else one(b.center)
            out[j] = InputRegion(one(b.lower), one(b.upper), center, b.l2_eps)
        else:
            out[j] = Bounds(one(b.lower), one(b.upper))
    return out


def stack(passes: list[RootPass]) -> dict[int, Bounds]:
    """The bounds of several passes as one batch (in their order)."""
    first = passes[0].bounds
    out: dict[int, Bounds] = {}
    for j, b in first.items():
        lo = torch.cat([p.bounds[j].lower for p in passes])
        hi = torch.cat([p.bounds[j].upper for p in passes])
        out[j] = InputRegion(lo, hi) if isinstance(b, InputRegion) else Bounds(lo, hi)
    return out


class RootCache:
    """The root passes of one graph's regions, matched exactly on (box, rows); at most
    ``max_numbers`` bound entries in all (a pass that does not fit is not kept: it is computed
    again where it is needed). Beside them, the last one-box pass of
    ``bab.bounds_and_margins`` on any graph of the same network (``embed.reduce`` builds one
    per caller for input splitting): its linear lower bounds, matched on the function
    (:func:`same_graph`), box, rows and intermediate bounds; and the mixed mode's passes of the
    boxes bounded so far (``cut_passes``: ``bounds.cut.CutPasses``)."""

    def __init__(self, graph: BoundGraph, max_numbers: int = MAX_NUMBERS) -> None:
        self.graph = graph
        self.max_numbers = max_numbers
        self._passes: dict[bytes, list[RootPass]] = {}
        self._numbers = 0
        self._last: tuple | None = None  # ((graph, lo, hi, rows, intermediate), (lb, A, bias))
        self.cut_passes = CutPasses()  # the mixed mode's passes, for boxes inside them (cut.py)

    def put_last(
        self,
        graph: BoundGraph,
        lo: Tensor,
        hi: Tensor,
        rows: Tensor,
        intermediate: str,
        result: tuple[Tensor, Tensor, Tensor],
    ) -> None:
        """Keep ``result`` = ``(lb, A, bias)``, a one-box pass of ``rows`` (1, rows, n_outputs)
        on ``graph`` over the box ``lo``, ``hi`` (1, n_inputs), in place of the last one."""
        self._last = ((graph, lo, hi, rows, intermediate), result)  # one store

    def last(
        self,
        graph: BoundGraph,
        lo: Tensor,
        hi: Tensor,
        C: Tensor,
        intermediate: str,
        prefix: bool = False,
    ) -> tuple[Tensor, Tensor, Tensor] | None:
        """``(lb, A, bias)`` of the last kept one-box pass when it was on the same function
        (:func:`same_graph`), box, intermediate bounds and rows ``C`` (with ``prefix``: its
        first rows, C of shape (rows, n_outputs)), else None."""
        if self._last is None:
            return None
        (g0, lo0, hi0, C0, how), (lb, A, bias) = self._last
        rows = C.shape[0] if prefix else C.shape[1]
        C0 = C0[0, :rows] if prefix else C0
        if (
            how != intermediate
            or lo0.shape != lo.shape
            or C0.shape != C.shape
            or lo0.dtype != lo.dtype
            or not (torch.equal(lo0, lo) and torch.equal(hi0, hi) and torch.equal(C0, C))
            or not same_graph(g0, graph)
        ):
            return None
        return (lb[:, :rows], A[:, :rows], bias[:, :rows]) if prefix else (lb, A, bias)

    @staticmethod
    def _key(lower: Tensor) -> bytes:
        return lower.detach().double().contiguous().numpy().tobytes()

    def put(self, p: RootPass) -> bool:
        """Keep ``p`` if it fits; whether it is kept (a pass of the same box and rows kept
        already stays)."""
        if self.get(p.lower, p.upper, p.C, p.d) is not None:
            return True
        size = p.numbers()
        if self._numbers + size > self.max_numbers:
            return False
        self._passes.setdefault(self._key(p.lower), []).append(p)
        self._numbers += size
        return True

    def add_alpha(self, p: RootPass, lb: Tensor, bounds: dict[int, Bounds]) -> None:
        """Keep alpha-CROWN's lower bounds (rows,) and bounds beside the kept pass ``p`` (when
        they fit)."""
        kept = self._passes.get(self._key(p.lower), [])
        for k, q in enumerate(kept):
            if q is p and q.alpha is None and self._numbers + q.numbers() <= self.max_numbers:
                kept[k] = dataclasses.replace(q, alpha=(lb, bounds))
                self._numbers += q.numbers()

    def get(self, lower: Tensor, upper: Tensor, C: Tensor, d: Tensor) -> RootPass | None:
        """The pass of exactly this box and these rows, if kept."""
        for p in self._passes.get(self._key(lower.reshape(-1)), []):
            if p.matches(lower.reshape(-1), upper.reshape(-1), C, d):
                return p
        return None

    def of(self, graph: BoundGraph, prop: Property) -> RootPass | None:
        """The pass of ``prop`` (its box and stacked rows) on ``graph``, if kept (a cache of
        another graph has none)."""
        if graph is not self.graph:
            return None
        C, d, _ = stack_spec(prop)
        return self.get(prop.lower, prop.upper, C, d)


def same_graph(a: BoundGraph, b: BoundGraph) -> bool:
    """Whether two graphs compute the same function: node by node the same inputs, shapes and
    operation (the same object, or equal fields, tensors equal entry by entry)."""
    if a is b:
        return True
    if len(a.nodes) != len(b.nodes):
        return False
    for m, n in zip(a.nodes, b.nodes, strict=True):
        if m.inputs != n.inputs or m.shape != n.shape:
            return False
        if m.op is n.op:
            continue
        if type(m.op) is not type(n.op) or not dataclasses.is_dataclass(m.op):
            return False
        for f in dataclasses.fields(m.op):
            if not _same_value(getattr(m.op, f.name), getattr(n.op, f.name)):
                return False
    return True


def _same_value(u, v) -> bool:
    if isinstance(u, Tensor) or isinstance(v, Tensor):
        return (
            isinstance(u, Tensor)
            and isinstance(v, Tensor)
            and u.dtype == v.dtype
            and u.shape == v.shape
            and torch.equal(u, v)
        )
    try:
        return u is v or (type(u) is type(v) and bool(u == v))
    except (RuntimeError, TypeError, ValueError):  # e.g. tuples of tensors
        return False
