"""Mixed-mode bounds at a narrow cut (a GAN's generator before its discriminator): the cut's
linear bounds in the input (:func:`linear_bounds`), the mode itself (:class:`Cut`, the ``cut``
of ``intermediate.intermediate_bounds``), and bounds for many boxes with each box's pass kept for the
boxes inside it (:class:`CutPasses`, :func:`mixed_bounds`).

Input splitting bounds sub-boxes of boxes it has bounded. The cut's lines and the bounds of the
nodes up to the cut hold on a box, so on every box inside it: a sub-box within ``levels``
halvings of a kept box takes them (its own forward bounds intersected with the kept ones) and
bounds only the nodes after the cut, whose rows end at the kept lines. On cGAN the cut's lines
and the bounds before the cut are 80-95% of a box's pass; the final rows still cross the whole
network, through the kept bounds. A sub-box is looser than with its own lines (the relaxations
before the cut are the kept box's), and within ``levels`` halvings it gets fresh ones again."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from robustlab import deadline
from robustlab.bounds import rounding, window
from robustlab.bounds.backward import MAX_ELEMENTS, backward
from robustlab.bounds.forward import Lin
from robustlab.bounds.graph import BoundGraph, Bounds
from robustlab.bounds.intermediate import intermediate_bounds
from robustlab.bounds.ops.activation import ReLU
from robustlab.bounds.ops.base import InputRegion
from robustlab.bounds.ops.linear import Conv
from robustlab.bounds.ops.shape import ConvTranspose
from robustlab.bounds.rows import identity_rows
from robustlab.bounds.tracker import covers

REUSE_LEVELS = 2  # a sub-box takes a kept pass within this many halvings of its box
KEPT_ENTRIES = 2**24  # numbers kept over all boxes (float64: 128 MB)


@dataclass(frozen=True)
class _Pass:
    """One box's kept pass: the box, its log-volume over the inputs that vary, the cut's lines
    and the bounds of the nodes up to the cut that a relaxation uses (batch dimension 1)."""

    lo: Tensor
    hi: Tensor
    log_volume: float
    lines: Lin
    prefix: dict[int, Bounds]
    size: int


@dataclass(frozen=True)
class Cut:
    """The mixed mode at a narrow cut for ``intermediate.intermediate_bounds`` (its ``cut``): ``node``,
    one every later node depends on only through it (``plan.narrow_cut``), gets its linear
    bounds in the input from its own backward rows (:func:`linear_bounds`), and the rows of
    every later node end there: each row crosses the network before the cut once per neuron
    of the cut instead of once per row. Looser than rows that go on to the input (a cut
    node's relaxations are chosen per neuron, not per row), far cheaper when the cut is narrow
    and what lies before it costly (a GAN's generator output).

    ``float32`` (a float64 box region): the nodes up to the cut, and the cut's lines, in the
    rigorous float32 mode (tracker.py: the box rounded outward, every bound and line bounding
    its own rounding), the rest in float64 from exact float64 copies of them (on cGAN the
    cut's lines are 80-90% of the work, and float32 products are ~2x faster there).

    ``lin``: the cut's lines, valid on the region (those of a box containing it); the nodes
    up to the cut then keep their interval bounds intersected with the caller's ``prior``
    (which carries that box's), and only later nodes are refined. ``lines`` receives the
    cut's lines (float64) under the key ``node``."""

    node: int
    lin: Lin | None = None
    float32: bool = False
    lines: dict | None = None

    @property
    def refines_before(self) -> bool:
        """Whether the nodes before the cut are refined (not when its lines are given)."""
        return self.lin is None

    def _f32(self, graph: BoundGraph, region: Bounds) -> bool:
        return (
            self.float32
            and self.lin is None
            and region.lower.dtype == torch.float64
            and getattr(region, "l2_eps", None) is None
            and covers(graph)
        )

    def start(self, graph: BoundGraph, region: Bounds) -> Bounds:
        """The input's bounds for the pass (float32: the box rounded outward)."""
        return _outward_region(region) if self._f32(graph, region) else region

    def at(
        self,
        graph: BoundGraph,
        bounds: dict,
        region: Bounds,
        windows: bool = True,
        cache: dict | None = None,
    ):
        """At the cut node (``bounds`` up to it): the bounds from here on (float64: exact
        copies of float32 ones) with the cut's bounded by its lines, and the ``stops`` of
        ``backward.backward`` (the cut's lines)."""
        i = self.node
        lin = (
            linear_bounds(graph, bounds, i, windows=windows, cache=cache)
            if self.lin is None
            else self.lin
        )
        if self._f32(graph, region):  # on from here in float64
            bounds = {j: rounding.upcast(v) for j, v in bounds.items()}
            bounds[0] = region
            lin = _upcast_lin(lin)
        if self.lines is not None:
            self.lines[i] = lin
        n = len(region.lower)
        c = ((region.upper + region.lower) / 2).reshape(n, -1)
        r = ((region.upper - region.lower) / 2).reshape(n, -1)
        bounds[i] = bounds[i].intersect(lin.concrete(c, r))
        return bounds, {i: lin}


class CutPasses:
    """The kept passes of one graph (another graph's ``put`` drops them), least recently
    stored first out past ``max_entries`` numbers; safe to share between threads."""

    def __init__(self, max_entries: int = KEPT_ENTRIES, levels: int = REUSE_LEVELS) -> None:
        self.max_entries, self.levels = max_entries, levels
        self._lock = threading.Lock()
        self._graph: BoundGraph | None = None
        self._items: OrderedDict[int, _Pass] = OrderedDict()
        self._size, self._next = 0, 0

    def clear(self) -> None:
        with self._lock:
            self._graph, self._items, self._size = None, OrderedDict(), 0

    def find(self, graph: BoundGraph, lo: Tensor, hi: Tensor) -> list[_Pass | None]:
        """Per box (rows of lo, hi): the smallest kept box that contains it (exactly, in
        float64) within ``levels`` halvings, or None."""
        with self._lock:
            items = list(self._items.values()) if graph is self._graph else []
        if not items:
            return [None] * len(lo)
        E_lo = torch.stack([p.lo for p in items])
        E_hi = torch.stack([p.hi for p in items])
        inside = (lo[:, None] >= E_lo[None]).all(-1) & (hi[:, None] <= E_hi[None]).all(-1)
        vol = torch.tensor([p.log_volume for p in items], dtype=torch.float64)
        own = _log_volume(lo, hi, E_lo, E_hi)  # (boxes, entries): over each entry's free inputs
        ok = inside & (own >= vol[None] - self.levels * math.log(2) - 1e-9)
        score = torch.where(ok, vol[None], torch.inf)
        best = score.argmin(1)
        return [items[int(b)] if bool(ok[i, b]) else None for i, b in enumerate(best)]

    def put(self, graph: BoundGraph, lo: Tensor, hi: Tensor, lines: Lin, prefix) -> None:
        """Keep one box's pass (lo, hi: (inputs,); lines and prefix with batch dimension 1)."""
        size = sum(t.numel() for t in (lines.wl, lines.bl, lines.wu, lines.bu))
        size += sum(b.lower.numel() * 2 for b in prefix.values())
        if size > self.max_entries:
            return
        free = hi > lo
        entry = _Pass(lo, hi, float((hi - lo)[free].log().sum()), lines, dict(prefix), size)
        with self._lock:
            if graph is not self._graph:
                self._graph, self._items, self._size = graph, OrderedDict(), 0
            self._items[self._next] = entry
            self._next += 1
            self._size += size
            while self._size > self.max_entries:
                self._size -= self._items.popitem(last=False)[1].size


def convolutional(graph: BoundGraph) -> bool:
    """Whether the graph has a convolution or a transposed convolution (a cGAN's generator and
    discriminator): where the float32 cut pass and the kept passes are measured to pay (not
    on the narrow dense waists of TLL networks, whose cut passes are cheap)."""
    return any(isinstance(n.op, (Conv, ConvTranspose)) for n in graph.nodes)


def _log_volume(lo: Tensor, hi: Tensor, E_lo: Tensor, E_hi: Tensor) -> Tensor:
    """Log-volume of each box (rows of lo, hi) over each entry's free inputs: (boxes, entries)."""
    free = (E_hi > E_lo)[None]
    width = (hi - lo)[:, None].expand(-1, len(E_lo), -1)
    return torch.where(free, width.clamp_min(1e-300).log(), 0.0).sum(-1)


def mixed_bounds(
    graph: BoundGraph,
    region: InputRegion,
    prior: Mapping[int, Bounds],
    C: Tensor,
    cut: int,
    float32: bool = False,
    kept: CutPasses | None = None,
) -> dict[int, Bounds]:
    """``intermediate_bounds(graph, region, "crown", prior=prior, C=C, cut=Cut(cut, float32=
    float32))`` for a batch of boxes; with ``kept``, each box inside a kept box (``find``) takes
    its lines and its bounds up to the cut, and every other box's pass is kept."""
    n = len(region.lower)
    lo, hi = region.lower.reshape(n, -1), region.upper.reshape(n, -1)
    found = kept.find(graph, lo, hi) if kept is not None else [None] * n
    miss = [i for i, p in enumerate(found) if p is None]
    hit = [i for i, p in enumerate(found) if p is not None]
    parts = []
    if miss:
        sel = torch.tensor(miss)
        lines: dict = {}
        b = intermediate_bounds(
            graph,
            _take_region(region, sel),
            "crown",
            prior=_take(prior, sel),
            C=None if C is None else C[sel],
            cut=Cut(cut, float32=float32, lines=lines),
        )
        if kept is not None and cut in lines:
            keep = [j for j in graph.plan.needs if j <= cut]
            for e, i in enumerate(miss):
                one = torch.tensor([e])
                prefix = {j: Bounds(b[j].lower[one], b[j].upper[one]) for j in keep}
                kept.put(graph, lo[i].clone(), hi[i].clone(), lines[cut].take(one), prefix)
        parts.append((sel, b))
    if hit:
        sel = torch.tensor(hit)
        passes = [found[i] for i in hit]
        sub = _take(prior, sel)
        for j in passes[0].prefix:
            own = (
                torch.cat([p.prefix[j].lower for p in passes]),
                torch.cat([p.prefix[j].upper for p in passes]),
            )
            own = Bounds(*own)
            sub[j] = own if j not in sub else sub[j].intersect(own)
        lines = Lin(*[torch.cat([getattr(p.lines, f) for p in passes]) for f in _FIELDS])
        b = intermediate_bounds(
            graph,
            _take_region(region, sel),
            "crown",
            prior=sub,
            C=None if C is None else C[sel],
            cut=Cut(cut, lin=lines),
        )
        parts.append((sel, b))
    if len(parts) == 1:
        out = parts[0][1]
    else:
        order = torch.cat([p[0] for p in parts]).argsort()
        out = {
            j: Bounds(
                torch.cat([p[1][j].lower for p in parts])[order],
                torch.cat([p[1][j].upper for p in parts])[order],
            )
            for j in parts[0][1]
        }
    out[0] = region
    return out


_FIELDS = ("wl", "bl", "wu", "bu")


def _take(bounds: Mapping[int, Bounds], sel: Tensor) -> dict[int, Bounds]:
    return {j: Bounds(b.lower[sel], b.upper[sel]) for j, b in bounds.items() if j}


def _take_region(region: InputRegion, sel: Tensor) -> InputRegion:
    center = None if region.center is None else region.center[sel]
    return InputRegion(region.lower[sel], region.upper[sel], center, region.l2_eps)


def linear_bounds(
    graph: BoundGraph, bounds, s: int, stops=None, windows: bool = True, cache: dict | None = None
) -> Lin:
    """Linear bounds of node ``s`` in the input, ``Wl x + bl <= h_s <= Wu x + bu`` on the box,
    from backward passes of its identity rows (each neuron's own CROWN bound, so as tight as
    CROWN's bounds of ``s``); ``bounds`` as for :func:`backward` up to ``s``.

    float32 bounds: the rows run in the rigorous float32 mode, W in float32 and the intercepts
    in float64 with the pass's rounding bound in them (``tracker.Tracker.finish``), so each line
    holds for the exact function at every point of the box.

    Where every node that reads ``s`` is a ReLU (slope 0), a neuron with ``upper <= 0`` (on
    every box) reaches no later row (its coefficient there is 0): it gets the constant lines
    of its interval bounds, and no rows. The upper lines come first, and a neuron they show
    dead gets no lower row (on cGAN cut nodes, 45-65% of the neurons: half the rows).
    ``cache``: as for :func:`backward` (one for every chunk of rows when not given)."""
    cache = {} if cache is None else cache
    shape = graph.nodes[s].shape
    n, k = math.prod(shape), math.prod(graph.nodes[0].shape)
    region = bounds[0]
    batch = region.lower.shape[0]
    lo = bounds[s].lower.reshape(batch, n)
    hi = bounds[s].upper.reshape(batch, n)
    wide = torch.float64 if rounding.tracked(region.lower) else region.lower.dtype
    # the constant lines lo <= h <= hi (exact in float64), replaced by each row computed
    wl = region.lower.new_zeros(batch, n, k)
    wu = torch.zeros_like(wl)
    bl, bu = lo.to(wide).clone(), hi.to(wide).clone()
    finite = torch.isfinite(lo) & torch.isfinite(hi)
    live = ((hi > 0) | ~finite).any(0) if _zero_when_dead(graph, s) else lo.new_ones(n).bool()
    chunk = max(1, MAX_ELEMENTS // (batch * graph.plan.numel_upto[s]))  # one sign per pass
    c = ((region.upper + region.lower) / 2).reshape(batch, -1).to(wide)
    r = ((region.upper - region.lower) / 2).reshape(batch, -1).to(wide)
    for sign in (-1, 1):  # upper lines (rows -e_q) first
        idx = live.nonzero().squeeze(1)
        for st in range(0, len(idx), chunk):
            deadline.check()
            part = idx[st : st + chunk]
            if windows and window.usable(shape):
                C = window.identity_windows(shape, part, batch, region.lower)
            else:
                C = identity_rows(shape, part, batch, region.lower)
            lin: dict = {}
            backward(graph, bounds, s, -C if sign < 0 else C, cache=cache, stops=stops, linear=lin)
            A, b = lin["A"].reshape(batch, len(part), k), lin["bias"].to(wide)
            if sign > 0:
                wl[:, part], bl[:, part] = A, b
            else:
                wu[:, part], bu[:, part] = -A, -b
        if sign < 0 and not bool(live.all()):  # dead by the upper lines: no lower rows
            up = (wu.to(wide) * c[:, None]).sum(-1) + (wu.to(wide).abs() * r[:, None]).sum(-1)
            live = live & ((up + bu > 0) | ~finite).any(0)
    return Lin(
        wl.reshape(batch, *shape, k),
        bl.reshape(batch, *shape),
        wu.reshape(batch, *shape, k),
        bu.reshape(batch, *shape),
    )


def _zero_when_dead(graph: BoundGraph, s: int) -> bool:
    """Whether every node that reads node ``s`` is a ReLU of slope 0 (a neuron of ``s`` with
    ``upper <= 0`` then reaches every later row with coefficient 0)."""
    readers = [node.op for node in graph.nodes[s + 1 :] if s in node.inputs]
    return bool(readers) and all(isinstance(op, ReLU) and op.slope == 0 for op in readers)


def _outward_region(region: Bounds) -> InputRegion:
    """A float64 box rounded outward to float32."""
    b = rounding.outward(region, torch.float32)
    return InputRegion(b.lower, b.upper)


def _upcast_lin(lin: Lin) -> Lin:
    """Float32 lines in float64 (exact: W is float32, the intercepts float64 already)."""
    return Lin(lin.wl.double(), lin.bl.double(), lin.wu.double(), lin.bu.double())
