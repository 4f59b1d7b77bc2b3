"""Falsification: a search for an input in a region whose output reaches the unsafe region.

Each disjunct of each region is attacked on its own margin (the largest ``C_r y - d_r`` over its
rows: the unsafe set is reached when it is <= 0), batched over every (region, disjunct) pair and
several starts: the best of many random points and random corners of the box, then projected
sign-gradient descent with momentum and a step size halved when progress stalls (APGD, Croce and
Hein 2020, arXiv:2003.01690), in rounds with fresh starts until the time share is spent. A
disjunct of a property with several (for instance Y_0 <= a or Y_0 >= b on a regression output) is
thereby attacked in each direction, not only in the one that looks closest at the start.
"""

from __future__ import annotations

import math
import time

import torch
from torch import Tensor, nn

from robustlab import deadline
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
