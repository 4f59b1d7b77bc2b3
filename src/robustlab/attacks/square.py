"""Square attack (Andriushchenko et al. 2020, arXiv:1912.00049): score-based random search with
square-shaped updates, Linf and L2; no gradients."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustlab.attacks.base import (
    ce_loss,
    geometry,
    lp_norm,
    query_function,
    register,
    view_per_sample,
)
from robustlab.errors import RobustlabError
from robustlab.threat import ThreatModel

_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128), (8000, 256))  # fmt: skip
_BANK_LIMIT = 1 << 24  # elements of a precomputed bank of windows


def p_selection(p_init: float, it: int, n_queries: int, rescale: bool) -> float:
    """The fraction of pixels changed at iteration ``it``: p_init halved at iterations 10, 50, 200,
    500, 1000, 2000, 4000, 6000, 8000 (of 10000; rescaled to ``n_queries`` when ``rescale``)."""
    if rescale:
        it = int(it / n_queries * 10000)
    for bound, div in _SCHEDULE:
        if it <= bound:
            return p_init / div
    return p_init / 512


def _rectangles(h: int, w: int) -> Tensor:
    """Concentric rectangles weighted 1/(k+1)^2, unit L2 norm."""
    delta = torch.zeros(h, w)
    ch, cw = h // 2, w // 2
    for k in range(max(ch + 1, cw + 1)):
        rows, cols = slice(max(ch - k, 0), ch + k + 1), slice(max(cw - k, 0), cw + k + 1)
        delta[rows, cols] += 1.0 / (k + 1) ** 2
    return delta / delta.norm()


def eta(s: int) -> Tensor:
    """The L2 square update: two halves of opposite sign, unit L2 norm."""
    if s < 2:
        return torch.ones(1, 1)
    delta = torch.cat([_rectangles(s // 2, s), -_rectangles(s - s // 2, s)])
    return delta / delta.norm()


class _Windows:
    """Square windows of side s at per-sample positions, placed in an (H, W) image; a bank of
    every position is precomputed for small images."""

    def __init__(self, h: int, w: int, device) -> None:
        self.h, self.w, self.device = h, w, device
        self.banks: dict[tuple[int, bool], Tensor] = {}

    def positions(self, s: int, u_h: Tensor, u_w: Tensor) -> tuple[Tensor, Tensor]:
        """Top-left corners in [0, H - s] x [0, W - s] (the reference code never picks the last
        row and column; on small inputs that leaves pixels that can never change)."""
        return (u_h * (self.h - s + 1)).long(), (u_w * (self.w - s + 1)).long()

    def place(self, kind: str, pattern: Tensor, vh: Tensor, vw: Tensor) -> Tensor:
        """``pattern`` (s x s, named ``kind`` for the bank) at each position: (N, H, W), zero
        elsewhere."""
        s = pattern.shape[0]
        key = (s, kind)
        nh, nw = self.h - s + 1, self.w - s + 1
        if nh * nw * self.h * self.w <= _BANK_LIMIT:
            if key not in self.banks:
                ar_h, ar_w = (
                    torch.arange(nh, device=self.device),
                    torch.arange(nw, device=self.device),
                )
                gh, gw = torch.meshgrid(ar_h, ar_w, indexing="ij")
                self.banks[key] = self._put(pattern, gh.flatten(), gw.flatten()).view(
                    nh, nw, self.h, self.w
                )
            return self.banks[key][vh, vw]
        return self._put(pattern, vh, vw)

    def _put(self, pattern: Tensor, vh: Tensor, vw: Tensor) -> Tensor:
        s = pattern.shape[0]
        ar = torch.arange(s, device=vh.device)
        out = torch.zeros(len(vh), self.h, self.w, dtype=pattern.dtype, device=vh.device)
        n = torch.arange(len(vh), device=vh.device)[:, None, None]
        out[n, (vh[:, None] + ar)[:, :, None], (vw[:, None] + ar)[:, None, :]] = pattern
        return out


class _Draws:
    """Uniform random numbers for the next queries, drawn in bulk from one generator."""

    def __init__(self, gen: torch.Generator, n: int, k: int, like: Tensor, chunk: int = 128):
        self.gen, self.k, self.like, self.chunk = gen, k, like, chunk
        self._fill(n)

    def _fill(self, n: int) -> None:
        self.buf = torch.rand(
            self.chunk,
            n,
            self.k,
            generator=self.gen,
            dtype=self.like.dtype,
            device=self.like.device,
        )
        self.i = 0

    def keep(self, k: Tensor) -> None:
        self.buf = self.buf[:, k]

    def next(self) -> Tensor:
        if self.i == self.chunk:
            self._fill(self.buf.shape[1])
        self.i += 1
        return self.buf[self.i - 1]


@register("square")
@dataclass(frozen=True)
class Square:
    """Square attack (Andriushchenko et al. 2020, arXiv:1912.00049), Linf and L2.

    Random search on the margin loss: each query changes one square window per image (its side
    set by the p schedule), kept if the loss decreases. Linf windows move to a vertex of the
    threat model's box; L2 windows move mass between two windows on the eps-sphere. Per-sample
    windows as in the paper; a point stops being queried once misclassified.
    """

    n_queries: int = 5000
    p_init: float = 0.8
    loss: str = "margin"  # "margin" | "ce"
    rescale_schedule: bool = True
    seed: int = 0

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        if self.loss not in ("margin", "ce"):
            raise RobustlabError(f"Square loss must be 'margin' or 'ce'; found {self.loss!r}")
        shape = x.shape
        if x.dim() not in (2, 3, 4):
            raise RobustlabError(
                f"Square expects inputs (N, C, H, W), (N, C, L) or (N, D); found {tuple(shape)}"
            )
        img = x if x.dim() == 4 else x.view(len(x), x.shape[1] if x.dim() == 3 else 1, 1, -1)
        gen = torch.Generator(device=x.device).manual_seed(self.seed)
        geo = geometry(threat, img)
        model = query_function(model, x)  # forward passes only
        with torch.inference_mode():  # queries only: no autograd bookkeeping at all
            if geo.norm == "inf":
                out = self._linf(model, img, y, threat, gen, shape)
            else:
                out = self._l2(model, img, y, threat, geo.eps, gen, shape)
        return out.view(shape).clone()  # a normal tensor again (usable in autograd)

    def _side(self, i: int, h: int, w: int, least: int) -> int:
        p = p_selection(self.p_init, i, self.n_queries, self.rescale_schedule)
        s = max(int(round(math.sqrt(p * h * w))), least)
        if least > 1 and s % 2 == 0:
            s += 1
        return min(s, h, w)

    def _search(self, model, x0, y, x_best, propose, draws, shape) -> Tensor:
        """The random search shared by both norms: keep a proposal if the loss decreases."""

        def score(z: Tensor, yy: Tensor) -> tuple[Tensor, Tensor]:
            logits = model(z.view(-1, *shape[1:]))
            other = logits.scatter(1, yy[:, None], float("-inf")).amax(1)
            margin = logits.gather(1, yy[:, None]).squeeze(1) - other
            return margin, margin if self.loss == "margin" else -ce_loss(logits, yy)

        out = x_best.clone()
        act = torch.arange(len(x0), device=x0.device)
        margin_min, loss_min = score(x_best, y)
        for i in range(self.n_queries + 1):
            done = margin_min <= 0
            if bool(done.any()):
                out[act[done]] = x_best[done]
                keep = ~done
                act, x0, y, x_best = act[keep], x0[keep], y[keep], x_best[keep]
                margin_min, loss_min = margin_min[keep], loss_min[keep]
                propose.keep(keep)
                draws.keep(keep)
            if len(act) == 0 or i == self.n_queries:
                break
            x_new = propose(i, x0, x_best, draws.next())
            margin, loss = score(x_new, y)
            if self.loss == "margin":  # a misclassified proposal always lowers the margin
                upd = margin < margin_min
                margin_min = loss_min = torch.where(upd, margin, margin_min)
            else:
                improved = loss < loss_min
                loss_min = torch.where(improved, loss, loss_min)
                upd = improved | (margin <= 0)
                margin_min = torch.where(upd, margin, margin_min)
            x_best = torch.where(view_per_sample(upd, x_best), x_new, x_best)
        if len(act):
            out[act] = x_best
        return out

    def _linf(self, model, x0, y, threat, gen, shape) -> Tensor:
        n, c, h, w = x0.shape
        lo, hi = threat.box(x0)
        stripes = torch.rand(n, c, 1, w, generator=gen, dtype=x0.dtype, device=x0.device) < 0.5
        x_best = torch.where(stripes, hi, lo)
        windows = _Windows(h, w, x0.device)
        attack = self

        class Propose:
            def __init__(self):
                self.lo, self.hi = lo, hi

            def keep(self, k):
                self.lo, self.hi = self.lo[k], self.hi[k]

            def __call__(self, i, xs, xb, u):
                s = attack._side(i, h, w, 1)
                vh, vw = windows.positions(s, u[:, 0], u[:, 1])
                mask = windows.place(
                    "mask", torch.ones(s, s, dtype=torch.bool, device=xs.device), vh, vw
                )[:, None]
                up = (u[:, 2:] < 0.5).view(len(xs), c, 1, 1)
                return torch.where(mask, torch.where(up, self.hi, self.lo), xb)

        draws = _Draws(gen, n, 2 + c, x0)
        return self._search(model, x0, y, x_best, Propose(), draws, shape)

    def _l2(self, model, x0, y, threat, eps, gen, shape) -> Tensor:
        n, c, h, w = x0.shape
        windows = _Windows(h, w, x0.device)
        attack = self

        def on_sphere(xs, delta):
            norm = view_per_sample(lp_norm(delta, "2").clamp_min(1e-12), delta)
            return threat.project(xs, xs + delta / norm * eps)

        def channel_norm(v: Tensor) -> Tensor:
            return v.flatten(2).norm(dim=2)[:, :, None, None]

        # the initial point: a grid of eta-squares with random signs and orientations
        s0 = max(h // 5, 1)
        start = max((h - s0 * 5) // 2, 0)
        delta = torch.zeros_like(x0)
        e0 = eta(s0).to(x0)
        for vh in range(start, h - s0 + 1, s0):
            for vw in range(start, w - s0 + 1, s0):
                flip = bool(torch.rand(1, generator=gen) < 0.5)
                sign = (torch.rand(n, c, 1, 1, generator=gen) < 0.5).to(x0) * 2 - 1
                delta[:, :, vh : vh + s0, vw : vw + s0] += (e0.t() if flip else e0) * sign
        x_best = on_sphere(x0, delta)

        class Propose:
            def keep(self, k):
                pass

            def __call__(self, i, xs, xb, u):
                s = attack._side(i, h, w, 3)
                d = xb - xs
                vh, vw = windows.positions(s, u[:, 0], u[:, 1])
                vh2, vw2 = windows.positions(s, u[:, 2], u[:, 3])
                one = torch.ones(s, s, dtype=torch.bool, device=xs.device)
                m1 = windows.place("mask", one, vh, vw)[:, None]
                m2 = windows.place("mask", one, vh2, vw2)[:, None]
                e = eta(s).to(xs)
                flip = (u[:, 4] < 0.5)[:, None, None, None]
                pattern = torch.where(
                    flip,
                    windows.place("eta_t", e.t(), vh, vw)[:, None],
                    windows.place("eta", e, vh, vw)[:, None],
                )
                sign = (u[:, 5:] < 0.5).to(xs).view(len(xs), c, 1, 1) * 2 - 1
                win1 = d * m1
                new = pattern * sign + win1 / (1e-12 + channel_norm(win1))
                n_img = view_per_sample(lp_norm(d, "2"), d)
                n_windows = channel_norm(d * (m1 | m2))
                scale = ((eps**2 - n_img**2).clamp_min(0) / c + n_windows**2).sqrt()
                new = new / channel_norm(new).clamp_min(1e-12) * scale
                d = torch.where(m1, new, d.masked_fill(m2, 0.0))
                return on_sphere(xs, d)

        draws = _Draws(gen, n, 5 + c, x0)
        return self._search(model, x0, y, x_best, Propose(), draws, shape)
