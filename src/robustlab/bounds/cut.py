"""Mixed-mode bounds at a narrow cut (``crown.intermediate_bounds``' ``cut``: a GAN's generator
before its discriminator) for many boxes, with each box's pass kept for the boxes inside it.

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

from robustlab.bounds.crown import intermediate_bounds
from robustlab.bounds.forward import Lin
from robustlab.bounds.graph import BoundGraph, Bounds
from robustlab.bounds.ops.base import InputRegion
from robustlab.bounds.ops.linear import Conv
from robustlab.bounds.ops.shape import ConvTranspose

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
    """``intermediate_bounds(graph, region, "crown", prior=prior, C=C, cut=cut)`` for a batch of
    boxes, ``cut_float32=float32``; with ``kept``, each box inside a kept box (``find``) takes
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
            cut=cut,
            cut_float32=float32,
            lines=lines,
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
            cut=cut,
            cut_lin=lines,
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
