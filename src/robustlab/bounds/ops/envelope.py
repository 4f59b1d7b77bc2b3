"""Sound linear relaxations of elementwise functions from one rigorous primitive (CROWN's tangents
and chords, Zhang et al. 2018, arXiv:1811.00866, with the intercepts proven rather than assumed).

Any slope ``k`` gives a valid lower line ``k x + b`` of ``f`` on ``[l, u]`` when ``b`` is at most
``min f(x) - k x`` over the interval; ``Elementwise`` picks slopes (a tangent, a chord, or
alpha-CROWN's optimised choice) and bounds that minimum rigorously. The function is split at its
inflection points and kinks (``breaks``); on a piece where ``h(x) = f(x) - k x`` is convex, ``h``
lies above its tangent at any point ``t`` of the piece, so ``h(t) + min(h'(t)(a - t), h'(t)(b - t))``
bounds it from below whatever ``t`` is (an approximate critical point makes it tight); on other
pieces the minimum is at an end. Every candidate value is lowered by its own rounding margin (16
ulps of the terms it is computed from). Upper lines are the same with ``-f``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from robustlab.bounds.ops.base import Activation, Bounds
from robustlab.errors import RobustlabError

ULPS = 16  # rounding margin per candidate value, in units of the dtype's epsilon
ITERATIONS = 30  # bisection steps for a critical point (any point is sound; this only tightens)
STEERING_ITERATIONS = 12  # while alpha-CROWN steers (its bounds are not kept)
TINY_WIDTH = 1e-9  # relative width below which an interval is bounded by constants


@dataclass(eq=False)
class Elementwise(Activation):
    """An elementwise function described by ``f``, ``df``, the sign of ``f''`` on a piece
    (``curvature``) and the points splitting its pieces (``breaks``); subclasses add a
    ``domain`` check. Its alpha-CROWN parameters are the lower and upper slopes, each a fraction
    of the range of ``f'`` on the interval."""

    node: str = field(default="", kw_only=True)  # the graph node, for error messages
    has_alpha: bool = field(default=True, kw_only=True)
    # lower bounds are lowered by this much: an enclosure of functions within ``slack`` below f
    # (the softmax's probabilities from exponentials capped at ``SOFTMAX_CAP``)
    slack: float = field(default=0.0, kw_only=True)
    label = "function"

    def scale(self, x: Tensor, fx: Tensor) -> Tensor:
        """The magnitude that f's evaluation error at x is relative to (here |f(x)|; sin's is 1,
        GELU's |x|: torch computes it as x (1 + erf) / 2, with cancellation)."""
        return fx.abs()

    # --- the function -------------------------------------------------------------------
    def f(self, x: Tensor) -> Tensor:
        return self.forward(x)

    def df(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def curvature(self, m: Tensor) -> Tensor:
        """+1 where f is convex around ``m`` (inside one piece), -1 concave, 0 linear."""
        raise NotImplementedError

    def breaks(self, l: Tensor, u: Tensor) -> list[Tensor]:
        """Points splitting [l, u] into pieces of constant curvature, ascending, inside [l, u]."""
        return []

    def outside(self, l: Tensor, u: Tensor) -> Tensor | None:
        """Where [l, u] leaves the domain (None: defined everywhere)."""
        return None

    domain = "all reals"

    def saturated(self, l: Tensor, u: Tensor) -> Tensor | None:
        """Where the interval is bounded by the function's global range ``self.span``."""
        return None

    span = (-1.0, 1.0)

    def critical(
        self, k: Tensor, a: Tensor, b: Tensor, s: float, iterations: int = ITERATIONS
    ) -> list[Tensor]:
        """Points near the minimum of ``s (f - k x)`` on [a, b] (convex there): bisection on its
        derivative. Any point is sound (the best of the candidates' bounds is kept);
        subclasses give closed forms (solutions of ``f'(x) = k``)."""
        lo, hi, kk = torch.broadcast_tensors(a.detach(), b.detach(), k.detach())
        for _ in range(iterations):
            mid = (lo + hi) / 2
            down = s * (self.df(mid) - kk) < 0
            lo = torch.where(down, mid, lo)
            hi = torch.where(down, hi, mid)
        return [(lo + hi) / 2]

    # --- the primitive ------------------------------------------------------------------
    def _bound(
        self, k: Tensor, l: Tensor, u: Tensor, upper: bool, steps: int = ITERATIONS
    ) -> Tensor:
        """A lower bound of ``min f(x) - k x`` over [l, u] (``upper``: an upper bound of the max)."""
        s = -1.0 if upper else 1.0
        ulp = ULPS * torch.finfo(l.dtype).eps
        edges = [l, *self.breaks(l, u), u]
        fe = [self.f(e) for e in edges]
        # h = s (f - k x) at the edges, each lowered by its rounding margin
        he = [
            s * (fv - k * e) - ulp * (self.scale(e, fv) + (k * e).abs())
            for e, fv in zip(edges, fe, strict=True)
        ]
        best = None
        for i in range(len(edges) - 1):
            a, b = edges[i], edges[i + 1]
            v = torch.minimum(he[i], he[i + 1])
            convex = s * self.curvature((a + b) / 2) > 0
            if bool(convex.any()):
                with torch.no_grad():
                    points = [
                        torch.minimum(torch.maximum(t, a), b)
                        for t in self.critical(k, a, b, s, steps)
                    ]
                vt = None
                for t in points:  # each gives a valid bound; the best is kept
                    ft = self.f(t)
                    dh = s * (self.df(t) - k)
                    left = torch.where(t > a, dh * (a - t), torch.zeros_like(dh))
                    right = torch.where(b > t, dh * (b - t), torch.zeros_like(dh))
                    span = torch.where(b > a, (dh * (b - a)).abs(), torch.zeros_like(dh))
                    err = self.scale(t, ft) + (k * t).abs() + span
                    cand = s * (ft - k * t)
                    if steps == ITERATIONS:  # not while steering: only the gradient counts there
                        cand = cand + torch.minimum(left, right) - ulp * err
                    vt = cand if vt is None else torch.maximum(vt, cand)
                v = torch.where(convex, vt, v)
            best = v if best is None else torch.minimum(best, v)
        tiny = torch.finfo(l.dtype).tiny  # values that underflowed to zero
        return s * (best - tiny)

    def _shape(self, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Whether f is convex / concave on all of [l, u], and the least and largest slope of f
        there (f' is monotone on every piece, so its extremes are at piece ends and on linear
        pieces at their middle)."""
        edges = [l, *self.breaks(l, u), u]
        convex = torch.ones_like(l, dtype=torch.bool)
        concave = torch.ones_like(l, dtype=torch.bool)
        prev = None
        slopes = [self.df(e) for e in edges]
        for a, b in zip(edges[:-1], edges[1:], strict=True):
            m = (a + b) / 2
            c, d = self.curvature(m), self.df(m)
            real = b > a
            convex &= ~real | (c >= 0)
            concave &= ~real | (c <= 0)
            if prev is not None:  # slope changes across a break (kinks)
                convex &= ~real | (d >= prev)
                concave &= ~real | (d <= prev)
            prev = d if prev is None else torch.where(real, d, prev)
            slopes.append(d)
        ks = torch.stack([torch.nan_to_num(k) for k in slopes])
        return convex, concave, ks.amin(0), ks.amax(0)

    # --- Activation protocol -------------------------------------------------------------
    def _checked(self, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor, bool]:
        """The interval in float64 (float32 only while alpha-CROWN steers: clipped into the
        domain there), or an error naming the node."""
        steering = l.dtype != torch.float64
        l, u = l.double(), u.double()
        bad = self.outside(l, u)
        if bad is not None and bool(bad.any()):
            if not steering:
                i = bad.flatten().nonzero()[0, 0]
                lo, hi = float(l.flatten()[i]), float(u.expand_as(l).flatten()[i])
                raise RobustlabError(
                    f"{self.label} at node '{self.node}' of an input in [{lo:.4g}, {hi:.4g}], "
                    f"outside its domain ({self.domain}): the bound cannot be proven"
                )
            l, u = self.clip(l, u)
        return l, u, steering

    def clip(self, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        return l, u

    def _finish(self, tensors, dtype: torch.dtype, steering: bool):
        out = []
        for t in tensors:
            if not bool(torch.isfinite(t).all()):
                if not steering:
                    raise RobustlabError(
                        f"{self.label} at node '{self.node}' overflows float64 on these bounds: "
                        "the bound cannot be proven"
                    )
                t = torch.nan_to_num(t)
            out.append(t.to(dtype))
        return out

    def ibp(self, b: Bounds) -> Bounds:
        l, u, steering = self._checked(b.lower, b.upper)
        zero = torch.zeros_like(l)
        lo, hi = self._bound(zero, l, u, False) - self.slack, self._bound(zero, l, u, True)
        sat = self.saturated(l, u)
        if sat is not None:
            lo = torch.where(sat, self.span[0], lo)
            hi = torch.where(sat, self.span[1], hi)
        lo, hi = self._finish([lo, hi], b.lower.dtype, steering)
        return Bounds(lo, hi)

    def _slopes(self, l, u, alpha):
        convex, concave, kmin, kmax = self._shape(l, u)
        fl, fu = self.f(l), self.f(u)
        width = u - l
        mid = (l + u) / 2
        chord = (fu - fl) / torch.where(width > 0, width, torch.ones_like(width))
        tangent = self.df(mid)
        k_lo = torch.where(convex, tangent, chord)
        k_up = torch.where(concave, tangent, chord)
        # infinite slopes (sqrt at 0) are capped: any slope is sound, these only steer
        cap = chord.abs() * 1e4 + 1.0
        kmin, kmax = torch.maximum(kmin, -cap), torch.minimum(kmax, cap)
        k_lo, k_up = k_lo.clamp(kmin, kmax), k_up.clamp(kmin, kmax)
        if alpha is not None:
            a = alpha.to(l.dtype)
            k_lo = kmin + a[..., 0] * (kmax - kmin)
            k_up = kmin + a[..., 1] * (kmax - kmin)
        # (nearly) degenerate intervals: constant lines, the function's interval values
        flat = width <= TINY_WIDTH * (1.0 + torch.maximum(l.abs(), u.abs()))
        k_lo = torch.where(flat, torch.zeros_like(k_lo), k_lo)
        k_up = torch.where(flat, torch.zeros_like(k_up), k_up)
        return k_lo, k_up, kmin, kmax

    def relax(self, l, u, alpha=None):
        dtype = l.dtype
        l, u, steering = self._checked(l, u)
        sat = self.saturated(l, u)
        if sat is not None:  # keep the arithmetic finite there; replaced below
            u = torch.where(sat, l, u)
        la, ua, _, _ = self._slopes(l, u, alpha)
        steps = STEERING_ITERATIONS if steering else ITERATIONS
        lb = self._bound(la, l, u, False, steps) - self.slack
        ub = self._bound(ua, l, u, True, steps)
        if sat is not None:
            zero = torch.zeros_like(la)
            la, ua = torch.where(sat, zero, la), torch.where(sat, zero, ua)
            lb = torch.where(sat, self.span[0], lb)
            ub = torch.where(sat, self.span[1], ub)
        la, lb, ua, ub = torch.broadcast_tensors(la, lb, ua, ub)
        return tuple(self._finish([la, lb, ua, ub], dtype, steering))

    def alpha_init(self, l, u):
        """The default slopes as fractions of [min f', max f'] (lower, upper) on the last axis."""
        l, u, _ = self._checked(l, u)
        k_lo, k_up, kmin, kmax = self._slopes(l, u, None)
        span = torch.where(kmax > kmin, kmax - kmin, torch.ones_like(kmax))
        frac = torch.stack([(k_lo - kmin) / span, (k_up - kmin) / span], -1)
        return frac.clamp(0.0, 1.0).float()

    def alpha_start(self, b: Bounds) -> Tensor | None:
        if not bool((b.upper > b.lower).any()):
            return None
        return self.alpha_init(b.lower, b.upper)

    def clamp_alpha_(self, a: Tensor) -> None:
        a.clamp_(0.0, 1.0)
