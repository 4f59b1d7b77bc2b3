"""Falsification: a search for an input in a region whose output reaches the unsafe region.

Each disjunct of each region is attacked on its own margin (the largest ``C_r y - d_r`` over its
rows: the unsafe set is reached when it is <= 0), batched over every (region, disjunct) pair and
several starts: the best of many random points and random corners of the box, then projected
sign-gradient descent with momentum and a step size halved when progress stalls (APGD, Croce and
Hein 2020, arXiv:2003.01690), in rounds with fresh starts until the time share is spent. A
disjunct of a property with several (for instance Y_0 <= a or Y_0 >= b on a regression output) is
thereby attacked in each direction, not only in the one that looks closest at the start.

Where the inputs are few, :func:`sample_search` covers the box itself: a large low-discrepancy
sample scored on every disjunct, then Adam descent from the best points (ACAS Xu's violations
hide in regions 1e-3 wide on a face of the box; the input-split search needed tens of thousands
of boxes to reach them). :class:`Falsifier` runs it in slices beside branch and bound.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator

import torch
from scipy.stats import qmc
from torch import Tensor, nn

from robustlab import deadline
from robustlab.verify.schedule import portfolio
from robustlab.verify.spec import Property, Spec

MAX_BATCH_ELEMENTS = 2**22  # input entries per forward pass of the attack


def float32_box(lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    """The largest float32 box inside ``[lower, upper]`` (bounds rounded inwards); a coordinate
    whose interval holds no float32 number (a zero-width box at a float64 value) is pinned to
    the float32 number nearest its centre."""
    lo, hi = lower.float(), upper.float()
    lo = torch.where(lo.double() < lower, torch.nextafter(lo, torch.full_like(lo, torch.inf)), lo)
    hi = torch.where(hi.double() > upper, torch.nextafter(hi, torch.full_like(hi, -torch.inf)), hi)
    empty = lo > hi
    if empty.any():
        mid = ((lower + upper) / 2).float()
        lo, hi = torch.where(empty, mid, lo), torch.where(empty, mid, hi)
    return lo, hi


def in_box32(x: Tensor, lower: Tensor, upper: Tensor) -> bool:
    """Whether the float32 point ``x`` lies in the float32 box of ``[lower, upper]``."""
    lo, hi = float32_box(lower, upper)
    x = x.float().reshape(-1)
    return bool(((x >= lo) & (x <= hi)).all())


def _targets(spec: Spec, regions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Every (region, disjunct) pair of ``regions``: the region, ``C`` (T, rows, n_out) and
    ``d`` (T, rows) padded with rows that never count (mask False), and the mask."""
    roff, koff = spec.offsets
    reg, dis = [], []
    for r in regions.tolist():
        ks = range(int(roff[r]), int(roff[r + 1]))
        reg += [r] * len(ks)
        dis += list(ks)
    dis_t = torch.tensor(dis, dtype=torch.long)
    r0, r1 = koff[dis_t], koff[dis_t + 1]
    n_rows = int((r1 - r0).max()) if len(dis) else 0
    pos = r0[:, None] + torch.arange(n_rows)[None]
    mask = pos < r1[:, None]
    pos = pos.clamp_max(max(len(spec.d) - 1, 0))
    C = spec.C[pos] if len(spec.d) else torch.zeros(len(dis), 0, spec.n_outputs)
    d = spec.d[pos] if len(spec.d) else torch.zeros(len(dis), 0)
    return torch.tensor(reg, dtype=torch.long), C.float(), d.float(), mask


def _margin(y: Tensor, C: Tensor, d: Tensor, mask: Tensor) -> Tensor:
    """Per sample the largest ``C_r y - d_r`` over its disjunct's rows (-inf without rows)."""
    vals = torch.einsum("bro,bo->br", C, y) - d
    return torch.where(mask, vals, -torch.inf).amax(1) if vals.shape[1] else vals.sum(1) - math.inf


def attack(
    model: nn.Module,
    spec: Spec,
    regions: Tensor,
    shape: tuple[int, ...],
    *,
    seconds: float,
    steps: int = 60,
    restarts: int = 4,
    samples: int = 256,
    rounds: int = 1,
    seed: int = 0,
) -> tuple[int, Tensor] | None:
    """A region and a float32 input (flat) in its box whose output (by ``model``) reaches the
    unsafe region, or None after ``rounds`` rounds of fresh starts or when ``seconds`` pass
    (whichever comes first)."""
    stop = time.monotonic() + seconds
    reg, C, d, mask = _targets(spec, regions)
    if not len(reg):
        return None
    lo_all, hi_all = float32_box(spec.lower[regions], spec.upper[regions])
    where = {r: i for i, r in enumerate(regions.tolist())}
    idx = torch.tensor([where[r] for r in reg.tolist()])
    lo_t, hi_t = lo_all[idx], hi_all[idx]  # per target
    n_in = lo_t.shape[1]
    per_round = max(1, MAX_BATCH_ELEMENTS // max(n_in, 1))
    gen = torch.Generator().manual_seed(seed)
    for _ in range(rounds):
        for s in range(0, len(reg), max(1, per_round // max(restarts, 1))):
            t = slice(s, s + max(1, per_round // max(restarts, 1)))
            found = _round(
                model,
                shape,
                (lo_t[t], hi_t[t], C[t], d[t], mask[t]),
                steps,
                restarts,
                samples,
                gen,
                stop,
            )
            if found is not None:
                k, x = found
                return int(reg[t][k]), x
            if time.monotonic() > stop:
                return None
    return None


def _forward(model, x: Tensor, shape) -> Tensor:
    return model(x.reshape(-1, *shape)).reshape(len(x), -1).float()


def _round(model, shape, targets, steps, restarts, samples, gen, stop):
    """One round for targets with boxes ``lo, hi`` (T, n_in): returns (target, x) or None
    (also when the time ``stop`` passes)."""
    lo, hi, C, d, mask = targets
    T, n_in = lo.shape
    width = hi - lo
    # starts: the best of random points and random corners per target, and its box's centre
    n_rand = max(restarts, min(samples, MAX_BATCH_ELEMENTS // max(T * n_in, 1)))
    u = torch.rand(T, n_rand, n_in, generator=gen)
    corner = (torch.rand(T, n_rand, n_in, generator=gen) < 0.5).float()
    odd = torch.arange(n_rand)[None, :, None] % 2 == 1
    pts = lo[:, None] + torch.where(odd, corner, u) * width[:, None]
    pts[:, 0] = (lo + hi) / 2
    flat = pts.reshape(-1, n_in)
    tgt = torch.arange(T).repeat_interleave(n_rand)
    with torch.no_grad():
        m = _margin(_forward(model, flat, shape), C[tgt], d[tgt], mask[tgt]).view(T, n_rand)
    hit = (m <= 0).nonzero()
    if len(hit):
        k, j = hit[0].tolist()
        return k, pts[k, j]
    best = m.argsort(1)[:, :restarts]
    x = torch.gather(pts, 1, best[..., None].expand(-1, -1, n_in)).reshape(-1, n_in)
    tgt = torch.arange(T).repeat_interleave(best.shape[1])
    lo_s, hi_s, w_s = lo[tgt], hi[tgt], width[tgt]
    Cs, ds, ms = C[tgt], d[tgt], mask[tgt]
    eta = torch.full((len(x), 1), 0.5) * w_s  # APGD: halved where progress stalls
    best_x, best_m = x.clone(), torch.full((len(x),), torch.inf)
    last_best = best_m.clone()
    prev = x.clone()
    check = max(1, steps // 5)
    for k in range(steps + 1):
        xa = x.detach().requires_grad_(k < steps)
        with torch.enable_grad():
            m = _margin(_forward(model, xa, shape), Cs, ds, ms)
        with torch.no_grad():
            better = m < best_m
            best_x[better], best_m[better] = xa[better].detach(), m[better].detach()
            if (m <= 0).any():
                i = int(m.argmin())
                return int(tgt[i]), xa[i].detach()
        if k == steps or time.monotonic() > stop:
            break
        deadline.check()
        (g,) = torch.autograd.grad(m.sum(), xa)
        with torch.no_grad():
            z = torch.minimum(torch.maximum(x - eta * g.sign(), lo_s), hi_s)
            mom = 0.75 if k else 1.0
            nxt = x + mom * (z - x) + (1 - mom) * (x - prev)
            prev, x = x, torch.minimum(torch.maximum(nxt, lo_s), hi_s)
            if (k + 1) % check == 0:
                stalled = best_m >= last_best
                eta = torch.where(stalled[:, None], eta / 2, eta)
                x = torch.where(stalled[:, None], best_x, x)
                last_best = best_m.clone()
    return None


def search(
    model: nn.Module,
    prop: Property,
    shape: tuple[int, ...],
    *,
    samples: int = 2048,
    steps: int = 50,
    restarts: int = 4,
    seed: int = 0,
    seconds: float = 5.0,
) -> Tensor | None:
    """A float32 input (flat) in the property's box whose output reaches the unsafe region."""
    spec = Spec.from_properties([prop], prop.lower.numel(), _n_out(prop))
    found = attack(
        model,
        spec,
        torch.zeros(1, dtype=torch.long),
        shape,
        seconds=seconds,
        steps=steps,
        restarts=restarts,
        samples=samples,
        seed=seed,
    )
    return None if found is None else found[1]


def _n_out(prop: Property) -> int:
    return prop.disjuncts[0].C.shape[1] if prop.disjuncts else 0


def sample_search(
    model: nn.Module,
    spec: Spec,
    regions: Tensor,
    shape: tuple[int, ...],
    *,
    samples: int = 2**13,
    max_samples: int = 2**17,
    starts: int = 32,
    steps: int = 50,
    lr: tuple[float, float] = (0.003, 0.03),
    faces: float = 0.2,
    step_s: float = 0.02,
    seed: int = 0,
    progress: dict | None = None,
) -> Generator[tuple[int, Tensor] | None, None, None]:
    """Sample-and-descend falsification for boxes with few inputs (a generator, endless: each
    ``next`` does about ``step_s`` seconds of work and yields None, or a candidate ``(region,
    float32 flat x)`` whose output by ``model`` reaches the unsafe region).

    In rounds: a scrambled Sobol sample (Owen 1998) of ``samples`` points (doubling each round
    up to ``max_samples``; divided among the regions) shared by the regions' boxes, each
    coordinate of a point moved to the box's lower or upper face with probability ``faces / 2``
    each (violations of properties like ACAS Xu's sit on faces and corners), scored by every
    (region, disjunct) margin from one forward pass per point; then Adam descent (Kingma and
    Ba 2015, arXiv:1412.6980) from the ``starts`` best (point, disjunct) pairs on the sum of
    the disjunct's positive row margins, each start with its own step size (log-spaced in
    ``lr``, in box widths, cosine-decayed over ``steps``): the narrow ridges where a violation
    hides want small steps, the plateaus around them large ones. ``progress`` (a dict) counts
    the finished ``rounds`` and the ``points`` evaluated, and keeps the ``best`` sampled margin
    and the first sample's ``scale`` (its median |margin|)."""
    progress = {} if progress is None else progress
    reg, C, d, mask = _targets(spec, regions)
    if not len(reg):
        return
    lo_r, hi_r = float32_box(spec.lower[regions], spec.upper[regions])
    where = {r: i for i, r in enumerate(regions.tolist())}
    t_reg = torch.tensor([where[r] for r in reg.tolist()])  # each target's row in lo_r
    n_in = lo_r.shape[1]
    gen = torch.Generator().manual_seed(seed)
    rows = max(8, 256 // len(lo_r))  # points per pass, tuned to ``step_s`` as passes are timed
    total = samples
    for k in range(1_000_000):
        # points per region: about ``total`` forward passes and at most 2^22 margins a round
        n = max(256, min(total // len(lo_r), 2**22 // len(reg)))
        u = _points(n, n_in, faces, seed * 1_000_003 + k, gen)
        scores, s = [], 0
        while s < n:
            t0 = time.monotonic()
            part, s = u[s : s + rows], s + rows
            x = lo_r[:, None] + part[None] * (hi_r - lo_r)[:, None]  # (regions, pts, n_in)
            x = torch.minimum(torch.maximum(x, lo_r[:, None]), hi_r[:, None])
            with torch.no_grad():
                y = _forward(model, x.reshape(-1, n_in), shape).view(len(lo_r), len(part), -1)
            m = _margins(y[t_reg], C, d, mask)  # (targets, pts)
            scores.append(m)
            progress["points"] = progress.get("points", 0) + x.shape[0] * x.shape[1]
            hit = (m <= 0).nonzero()
            if len(hit):
                t, j = hit[0].tolist()
                yield int(reg[t]), x[t_reg[t], j]
            rows = _retune(rows, time.monotonic() - t0, step_s)
            yield None
        m = torch.cat(scores, 1).reshape(-1)
        progress["best"] = min(progress.get("best", math.inf), float(m.min()))
        if "scale" not in progress:  # the median |margin| of the first sample
            progress["scale"] = float(m[m.isfinite()].abs().median()) if m.isfinite().any() else 0.0
        best = m.argsort()[: min(starts, len(m))]
        tgt, pts = best // n, best % n
        yield from _descend(
            model, shape, (lo_r[t_reg[tgt]], hi_r[t_reg[tgt]]), (C[tgt], d[tgt], mask[tgt]),
            u[pts], reg[tgt], steps, lr, step_s, gen, progress,
        )  # fmt: skip
        progress["rounds"] = progress.get("rounds", 0) + 1
        total = min(2 * total, max_samples)


def _points(n: int, n_in: int, faces: float, seed: int, gen: torch.Generator) -> Tensor:
    """``n`` points of the unit cube (float32): scrambled Sobol where scipy has the dimension,
    uniform otherwise, each coordinate on a face with probability ``faces``."""
    if n_in <= 1000:
        sobol = qmc.Sobol(n_in, scramble=True, seed=seed)
        u = torch.from_numpy(sobol.random_base2(max(0, math.ceil(math.log2(n)))))[:n].float()
    else:
        u = torch.rand(n, n_in, generator=gen)
    r = torch.rand(n, n_in, generator=gen)
    zero, one = u.new_zeros(()), u.new_ones(())
    return torch.where(r < faces / 2, zero, torch.where(r > 1 - faces / 2, one, u))


def _margins(y: Tensor, C: Tensor, d: Tensor, mask: Tensor) -> Tensor:
    """Per target and point the largest ``C_r y - d_r`` over the target's rows: ``y`` (targets,
    pts, n_out), ``C`` (targets, rows, n_out) -> (targets, pts)."""
    vals = torch.einsum("tro,tpo->tpr", C, y) - d[:, None]
    if not vals.shape[2]:
        return vals.sum(2) - math.inf
    return torch.where(mask[:, None], vals, -torch.inf).amax(2)


def _retune(rows: int, took: float, step_s: float) -> int:
    """The next pass's size: ``rows`` scaled towards ``step_s`` seconds (at most 4x a pass)."""
    scale = min(4.0, max(0.25, step_s / max(took, 1e-6)))
    return int(min(2**16, max(8, rows * scale)))


def _descend(model, shape, box, rows, u0, reg, steps, lr, step_s, gen, progress):
    """Adam on the unit-cube coordinates ``u0`` (starts, n_in) of the boxes ``box = (lo, hi)``
    against the targets' ``rows = (C, d, mask)``: yields None about every ``step_s`` seconds,
    and ``(region, x)`` for a point that reaches the unsafe region."""
    lo, hi = box
    C, d, mask = rows
    w = hi - lo
    K = len(u0)
    logs = torch.linspace(math.log(lr[0]), math.log(lr[1]), K)
    lr0 = torch.exp(logs)[torch.randperm(K, generator=gen)][:, None]
    u, m1, m2 = u0.clone(), torch.zeros_like(u0), torch.zeros_like(u0)
    t_last = time.monotonic()
    for k in range(steps):
        ua = u.detach().requires_grad_(True)
        with torch.enable_grad():
            x = torch.minimum(torch.maximum(lo + ua * w, lo), hi)
            y = _forward(model, x, shape)
            progress["points"] = progress.get("points", 0) + len(x)
            vals = torch.einsum("kro,ko->kr", C, y) - d
            worst = torch.where(mask, vals, -torch.inf).amax(1) if vals.shape[1] else None
            if worst is None or bool((worst <= 0).any()):
                i = 0 if worst is None else int(worst.argmin())
                yield int(reg[i]), x[i].detach()
                return
            loss = torch.where(mask, vals.clamp_min(0), vals.new_zeros(())).sum()
        (g,) = torch.autograd.grad(loss, ua)
        with torch.no_grad():
            m1 = 0.9 * m1 + 0.1 * g
            m2 = 0.999 * m2 + 0.001 * g * g
            step = (m1 / (1 - 0.9 ** (k + 1))) / ((m2 / (1 - 0.999 ** (k + 1))).sqrt() + 1e-12)
            size = lr0 * 0.5 * (1 + math.cos(math.pi * k / steps))
            u = (u - size * step).clamp(0, 1)
        if time.monotonic() - t_last > step_s:
            yield None
            t_last = time.monotonic()


class Falsifier:
    """A :func:`sample_search` run in slices of time, its candidates decided by ``confirm``
    (``(region, x) -> counterexample or None``); ``used`` counts its seconds.

    Beside branch and bound it takes ``rate[0]`` of the time where its best point came within
    ``near`` times the median |margin| of its first sample (a near miss: ACAS Xu's hard
    violations, 0.006-0.45; of 136 properties that hold, 10 are as near), else ``rate[1]``
    (most properties hold, and pay this share). Each finished round whose best sampled margin
    is not ``gain`` (relatively) below the previous round's halves the share (``decay``), down
    to ``floor`` of it, past the first ``grace`` rounds (their samples double up to the
    largest; ACAS Xu 1_5 / prop_2's violation comes in them, 1.0 s against 1.9 s without the
    grace); a round that gains restores it: the search spent 20-36 s of ACAS Xu
    4_2 / prop_2's and 3_3 / prop_2's branch and bound, which hold, on rounds that found
    nothing nearer."""

    def __init__(
        self,
        steps: Generator,
        confirm,
        progress: dict,
        stats: dict,
        *,
        rate: tuple[float, float] = (0.1, 0.03),
        near: float = 0.5,
        slice_s: float = 0.02,
        decay: float = 0.5,
        floor: float = 0.125,
        gain: float = 0.1,
        grace: int = 4,
    ) -> None:
        self.steps, self.confirm, self.progress, self.stats = steps, confirm, progress, stats
        self.rate, self.near, self.slice_s = rate, near, slice_s
        self.decay, self.floor, self.gain, self.grace = decay, floor, gain, grace
        self.used = 0.0
        self.done = False
        self.stale = 0  # finished rounds since the best sampled margin last gained
        self._seen = (0, math.inf)  # (rounds, best margin) when last looked at

    def run(self, seconds: float, rounds: int | None = None):
        """A confirmed counterexample found within ``seconds`` (or before ``rounds`` rounds are
        finished), or None."""
        start = time.monotonic()
        stop = start + seconds
        try:
            while not self.done and time.monotonic() < stop:
                if rounds is not None and self.progress.get("rounds", 0) >= rounds:
                    break
                deadline.check()
                item = next(self.steps, StopIteration)
                if item is StopIteration:
                    self.done = True
                elif item is not None:
                    cex = self.confirm(*item)
                    if cex is not None:
                        self.stats["found_by"] = "sample search"
                        return cex
                    n = self.stats.get("rejected_candidates", 0)
                    self.stats["rejected_candidates"] = n + 1
        finally:
            self.used += time.monotonic() - start
            self.stats.update(
                search_s=round(self.used, 3), search_points=self.progress.get("points", 0)
            )
        return None

    def share(self) -> float:
        """Its share of branch and bound's time: ``rate``'s near or far share, times ``decay``
        for each round in a row that did not gain (at least ``floor``)."""
        best, scale = self.progress.get("best", math.inf), self.progress.get("scale", 0.0)
        rounds = self.progress.get("rounds", 0)
        seen, last = self._seen
        if rounds > seen:
            gained = rounds <= self.grace or best < last - self.gain * abs(last)
            self.stale = 0 if gained else self.stale + rounds - seen
            self._seen = (rounds, best)
        base = self.rate[0] if best < self.near * scale else self.rate[1]
        return base * max(self.floor, self.decay**self.stale)

    def beside(self, searches: list, end: float, shares=None) -> tuple[str, object]:
        """``schedule.portfolio``'s rule on ``searches`` until ``end`` (the search furthest below its
        share of the time takes the next step), with this search run between the steps for its
        :meth:`share` of their time: ``("falsified", counterexample)`` when it finds one."""
        base = self.used

        def turn(spent: float, now: float, end: float):
            if self.done or self.used - base >= self.share() * spent:
                return False, None
            cex = self.run(min(self.slice_s, end - now))
            return True, (None if cex is None else ("falsified", cex))

        return portfolio(searches, end, shares, side=turn)
