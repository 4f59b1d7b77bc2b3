"""Elementwise functions with sound relaxations on any interval (see ``envelope.py``): exp, log,
x^p (sqrt, reciprocal, rsqrt, square), sin, cos, erf, GELU, abs, clamp; and sign (a step)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from robustlab.bounds.ops.base import Activation, Bounds
from robustlab.bounds.ops.envelope import Elementwise


@dataclass(eq=False)
class Exp(Elementwise):
    """``exp``: convex and increasing; critical points in closed form (log k). With ``cap``:
    ``exp(min(x, cap))`` (the softmax's, which never overflows)."""

    cap: float | None = None
    label = "exp"

    def forward(self, x):
        return torch.exp(x if self.cap is None else x.clamp(max=self.cap))

    def df(self, x):
        e = self.forward(x)
        return e if self.cap is None else torch.where(x < self.cap, e, torch.zeros_like(e))

    def curvature(self, m):
        return torch.ones_like(m) if self.cap is None else (m < self.cap).to(m.dtype)

    def breaks(self, l, u):
        if self.cap is None:
            return []
        return [torch.minimum(torch.maximum(torch.full_like(l, self.cap), l), u)]

    def critical(self, k, a, b, s, iterations=0):
        return [torch.log(k.detach().clamp_min(torch.finfo(k.dtype).tiny))]


@dataclass(eq=False)
class Log(Elementwise):
    """``log``: concave and increasing on x > 0."""

    label = "log"
    domain = "x > 0"

    def forward(self, x):
        return torch.log(x)

    def df(self, x):
        return 1.0 / x

    def curvature(self, m):
        return -torch.ones_like(m)

    def outside(self, l, u):
        return l <= 0

    def clip(self, l, u):
        tiny = torch.finfo(torch.float32).tiny
        return l.clamp_min(tiny), u.clamp_min(tiny)

    def critical(self, k, a, b, s, iterations=0):
        kk = k.detach()
        return [torch.where(kk > 0, 1.0 / kk.clamp_min(torch.finfo(k.dtype).tiny), math.inf)]


@dataclass(eq=False)
class Pow(Elementwise):
    """``x ** p`` for a constant p (sqrt, reciprocal, rsqrt and square by name). Integer p: all
    reals (negative p: an interval without 0); fractional p: x >= 0 (x > 0 for p < 0)."""

    p: float = 2.0
    kind: str = "pow"

    @property
    def label(self):
        return self.kind if self.kind != "pow" else f"pow (p = {self.p:g})"

    @property
    def integer(self) -> bool:
        return float(self.p).is_integer()

    @property
    def domain(self):
        if self.integer:
            return "x != 0" if self.p < 0 else "all reals"
        return "x >= 0" if self.p > 0 else "x > 0"

    def forward(self, x):
        if self.kind == "sqrt":
            return torch.sqrt(x)
        if self.kind == "reciprocal":
            return torch.reciprocal(x)
        if self.kind == "rsqrt":
            return torch.rsqrt(x)
        return torch.pow(x, self.p)

    def f(self, x):
        return torch.pow(x, self.p)

    def df(self, x):
        return self.p * torch.pow(x, self.p - 1)

    def curvature(self, m):
        c = self.p * (self.p - 1)
        if c == 0:
            return torch.zeros_like(m)
        return torch.sign(c * torch.pow(m, self.p - 2))

    def breaks(self, l, u):
        if self.integer and self.p > 0:
            return [torch.minimum(torch.maximum(torch.zeros_like(l), l), u)]
        return []

    def critical(self, k, a, b, s, iterations=0):
        """The solutions of ``p x^(p-1) = k``: +-|k / p|^(1 / (p - 1))."""
        r = torch.pow((k.detach() / self.p).abs(), 1.0 / (self.p - 1))
        return [r, -r] if self.integer else [r]

    def outside(self, l, u):
        if self.integer:
            return (l <= 0) & (u >= 0) if self.p < 0 else None
        return l < 0 if self.p > 0 else l <= 0

    def clip(self, l, u):
        tiny = torch.finfo(torch.float32).tiny
        if self.integer:  # an interval around 0: keep its larger side
            pos = u >= -l
            return torch.where(pos, l.clamp_min(tiny), l), torch.where(pos, u, u.clamp_max(-tiny))
        floor = 0.0 if self.p > 0 else tiny
        return l.clamp_min(floor), u.clamp_min(floor)


@dataclass(eq=False)
class Sin(Elementwise):
    """``sin`` (``phase`` pi/2: ``cos``): inflection points at the zeros of the function; an
    interval of width 2 pi or more (or beyond 1e9 in magnitude) is bounded by [-1, 1]."""

    phase: float = 0.0

    @property
    def label(self):
        return "cos" if self.phase else "sin"

    def scale(self, x, fx):
        return torch.ones_like(fx)  # absolute error after range reduction

    def forward(self, x):
        return torch.cos(x) if self.phase else torch.sin(x)

    def df(self, x):
        return -torch.sin(x) if self.phase else torch.cos(x)

    def curvature(self, m):
        return -torch.sign(self.forward(m))

    def breaks(self, l, u):
        first = torch.ceil((l - self.phase) / math.pi) * math.pi + self.phase
        return [torch.minimum(torch.maximum(first + j * math.pi, l), u) for j in (0, 1)]

    def saturated(self, l, u):
        return (u - l >= 2 * math.pi) | (torch.maximum(l.abs(), u.abs()) > 1e9)


@dataclass(eq=False)
class Erf(Elementwise):
    """``erf``: convex for x < 0, concave for x > 0."""

    label = "erf"

    def forward(self, x):
        return torch.erf(x)

    def df(self, x):
        return 2.0 / math.sqrt(math.pi) * torch.exp(-x * x)

    def curvature(self, m):
        return -torch.sign(m)

    def breaks(self, l, u):
        return [torch.minimum(torch.maximum(torch.zeros_like(l), l), u)]


@dataclass(eq=False)
class GELU(Elementwise):
    """``x Phi(x)`` (exact GELU): concave, convex on [-sqrt 2, sqrt 2], concave."""

    label = "gelu"

    def forward(self, x):
        return nn.functional.gelu(x)

    def f(self, x):
        return 0.5 * x * torch.special.erfc(-x / math.sqrt(2.0))

    def scale(self, x, fx):
        return fx.abs() + x.abs()

    def df(self, x):
        return 0.5 * torch.special.erfc(-x / math.sqrt(2.0)) + x * torch.exp(
            -0.5 * x * x
        ) / math.sqrt(2.0 * math.pi)

    def curvature(self, m):
        return torch.sign(2.0 - m * m)

    def breaks(self, l, u):
        r = math.sqrt(2.0)
        return [torch.minimum(torch.maximum(torch.full_like(l, v), l), u) for v in (-r, r)]


_TANH_C, _TANH_A = math.sqrt(2.0 / math.pi), 0.044715  # GELU's tanh approximation


def _tanh_gelu_curvature(x: float) -> float:
    """A positive multiple of the second derivative of the tanh approximation of GELU:
    u' + 3 a c x^2 - x tanh(u) u'^2 with u = c (x + a x^3) (f'' = (1 - tanh(u)^2) times it)."""
    u = _TANH_C * (x + _TANH_A * x**3)
    du = _TANH_C * (1 + 3 * _TANH_A * x * x)
    return du + 3 * _TANH_A * _TANH_C * x * x - x * math.tanh(u) * du * du


def _inflection() -> float:
    """The positive inflection point of tanh-GELU (f'' > 0 on [0, r), < 0 beyond): bisection
    to float64 resolution."""
    lo, hi = 1.0, 2.0
    assert _tanh_gelu_curvature(lo) > 0 > _tanh_gelu_curvature(hi)
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _tanh_gelu_curvature(mid) > 0 else (lo, mid)
    return hi


@dataclass(eq=False)
class GELUTanh(GELU):
    """GELU's tanh approximation ``x (1 + tanh(c (x + a x^3))) / 2`` (Hendrycks and Gimpel 2016,
    arXiv:1606.08415): concave, convex on [-r, r], concave, r = 1.41850... (its second derivative
    is even; the inflection is found by bisection to float64 resolution, the rounding margin
    covers the rest)."""

    R: float = field(default_factory=_inflection, kw_only=True)

    def forward(self, x):
        return nn.functional.gelu(x, approximate="tanh")

    def f(self, x):
        return 0.5 * x * (1.0 + torch.tanh(_TANH_C * (x + _TANH_A * x * x * x)))

    def df(self, x):
        t = torch.tanh(_TANH_C * (x + _TANH_A * x * x * x))
        du = _TANH_C * (1.0 + 3.0 * _TANH_A * x * x)
        inner = torch.where((1.0 - t * t) == 0, torch.zeros_like(x), x * (1.0 - t * t) * du)
        return 0.5 * (1.0 + t) + 0.5 * inner

    def curvature(self, m):
        return torch.sign(self.R * self.R - m * m)

    def breaks(self, l, u):
        r = self.R
        return [torch.minimum(torch.maximum(torch.full_like(l, v), l), u) for v in (-r, r)]


@dataclass(eq=False)
class Abs(Elementwise):
    """``|x|``: two linear pieces (convex)."""

    label = "abs"

    def forward(self, x):
        return torch.abs(x)

    def df(self, x):
        return torch.sign(x)

    def curvature(self, m):
        return torch.zeros_like(m)

    def breaks(self, l, u):
        return [torch.minimum(torch.maximum(torch.zeros_like(l), l), u)]


@dataclass(eq=False)
class Clamp(Elementwise):
    """``clamp(x, lo, hi)`` (either may be None): max / min with a constant, ReLU6, Hardtanh."""

    lo: float | None = None
    hi: float | None = None

    label = "clamp"

    def forward(self, x):
        return torch.clamp(x, self.lo, self.hi)

    def df(self, x):
        inside = torch.ones_like(x, dtype=torch.bool)
        if self.lo is not None:
            inside &= x > self.lo
        if self.hi is not None:
            inside &= x < self.hi
        return inside.to(x.dtype)

    def curvature(self, m):
        return torch.zeros_like(m)

    def breaks(self, l, u):
        return [
            torch.minimum(torch.maximum(torch.full_like(l, v), l), u)
            for v in (self.lo, self.hi)
            if v is not None
        ]


@dataclass(eq=False)
class Sign(Activation):
    """``sign`` (0 at 0), a step. Across 0 the lower line runs from (0, -1) with a slope in
    [0, 2/u] (alpha), the upper line from (0, 1) with a slope in [0, 2/|l|]; intercepts carry
    a rounding margin."""

    node: str = ""
    has_alpha: bool = True
    unstable_only = True  # only inputs whose interval contains 0 need tighter bounds

    def forward(self, x):
        return torch.sign(x)

    def ibp(self, b):
        return Bounds(torch.sign(b.lower), torch.sign(b.upper))

    def alpha_init(self, l, u):
        return torch.stack([u >= -l, -l >= u], -1).to(torch.float32)

    def alpha_start(self, b):
        if not bool(((b.lower < 0) & (b.upper > 0)).any()):
            return None
        return self.alpha_init(b.lower, b.upper)

    def clamp_alpha_(self, a):
        a.clamp_(0.0, 1.0)

    def relax(self, l, u, alpha=None):
        if alpha is None:
            alpha = self.alpha_init(l, u)
        a = alpha.to(l.dtype)
        margin = 16 * torch.finfo(l.dtype).eps
        one = torch.ones_like(l)
        pos_u = torch.where(u > 0, u, one)
        neg_l = torch.where(l < 0, -l, one)
        cross = (l < 0) & (u > 0)
        # lower line: sign >= -1 below 0 (and at 0 when l < 0), rising to 1 (or to 0 at l = 0)
        la = torch.where(
            cross, a[..., 0] * 2 / pos_u, torch.where(l == 0, 1 / pos_u, 0 * a[..., 0])
        )
        la = torch.where(u > 0, la, torch.zeros_like(la))
        lb = torch.where(l > 0, one, torch.where(l == 0, 0 * one, -one)) - margin
        lb = torch.where((u == 0) & (l == 0), torch.zeros_like(lb), lb)
        ua = torch.where(
            cross, a[..., 1] * 2 / neg_l, torch.where(u == 0, 1 / neg_l, 0 * a[..., 1])
        )
        ua = torch.where(l < 0, ua, torch.zeros_like(ua))
        ub = torch.where(u < 0, -one, torch.where(u == 0, 0 * one, one)) + margin
        ub = torch.where((u == 0) & (l == 0), torch.zeros_like(ub), ub)
        return torch.broadcast_tensors(la, lb, ua, ub)
