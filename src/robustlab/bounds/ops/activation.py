"""Linear relaxations of elementwise nonlinearities (CROWN, Zhang et al. 2018, arXiv:1811.00866)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from robustlab.bounds.ops.base import Activation

TINY = 1e-12


@dataclass(eq=False)
class ReLU(Activation):
    """``max(x, slope * x)``: ReLU (slope 0) or LeakyReLU (0 < slope < 1)."""

    slope: float = 0.0
    has_alpha: bool = True
    zero_lower_intercept: bool = True

    def forward(self, x: Tensor) -> Tensor:
        return torch.where(x >= 0, x, self.slope * x)

    def alpha_init(self, l, u):
        # CROWN's adaptive lower slope: 1 when the positive part dominates, else the leak slope
        # (constants as tensors of l's dtype: a Python scalar pair in torch.where gives float32)
        return torch.where(u > -l, l.new_tensor(1.0), l.new_tensor(self.slope))

    def relax(self, l, u, alpha=None):
        s = l.new_tensor(self.slope)  # the model's slope, exact in l's dtype
        unstable = (l < 0) & (u > 0)
        stable = torch.where(l >= 0, l.new_tensor(1.0), s)
        # unstable: the chord through (l, s l) and (u, u); u - l >= u > 0 there, so no floor is
        # needed (a floor would shrink the line below f on intervals narrower than it)
        width = torch.where(unstable, u - l, l.new_tensor(1.0))
        ua = torch.where(unstable, (u - s * l) / width, stable)
        # the intercept refitted to the rounded slope: f - ua x is convex, so its largest value
        # on [l, u] is at an end (and no product of l and u can underflow)
        ub = torch.where(unstable, torch.maximum(s * l - ua * l, u - ua * u), l.new_tensor(0.0))
        if alpha is None:
            alpha = self.alpha_init(l, u)
        la = torch.where(unstable, alpha.to(l.dtype).clamp(self.slope, 1.0), stable)
        return la, torch.zeros_like(la), ua.expand_as(la), ub.expand_as(la)


@dataclass(eq=False)
class SShaped(Activation):
    """Sigmoid or Tanh: convex for x < 0, concave for x > 0.

    Tangents and chords as in CROWN; in the mixed case the tangent point is found by bisection and
    the intercepts are widened by a small margin so rounding cannot make the lines cross ``f``.
    """

    kind: str = "sigmoid"

    def forward(self, x):
        return torch.sigmoid(x) if self.kind == "sigmoid" else torch.tanh(x)

    def _d(self, x):
        y = self.forward(x)
        return y * (1 - y) if self.kind == "sigmoid" else 1 - y * y

    def _tangent(self, d):
        k = self._d(d)
        return k, self.forward(d) - k * d

    def _touch(self, l, u, upper: bool, iters: int = 30):
        """Tangent point in the concave part [0, u] (upper) or convex part [l, 0] (lower) whose
        tangent passes through the far endpoint; returns the point and a mask where one exists."""
        far = l if upper else u
        f_far = self.forward(far)
        lo = torch.zeros_like(l) if upper else l.clone()
        hi = u.clone() if upper else torch.zeros_like(u)

        def ok(d):  # tangent at d passes on the right side of (far, f(far))
            k, c = self._tangent(d)
            v = k * far + c
            return v >= f_far if upper else v <= f_far

        exists = ok(hi if upper else lo)
        for _ in range(iters):
            mid = (lo + hi) / 2
            good = ok(mid)
            if upper:
                hi = torch.where(good, mid, hi)
                lo = torch.where(good, lo, mid)
            else:
                lo = torch.where(good, mid, lo)
                hi = torch.where(good, hi, mid)
        return (hi if upper else lo), exists

    def relax(self, l, u, alpha=None):
        fl, fu = self.forward(l), self.forward(u)
        width = (u - l).clamp_min(TINY)
        k_chord = (fu - fl) / width
        b_chord = fl - k_chord * l
        mid = (l + u) / 2
        k_mid, b_mid = self._tangent(mid)
        convex, concave = u <= 0, l >= 0
        # upper: chord where convex; tangent at mid where concave; mixed: tangent via bisection
        d_up, up_ok = self._touch(l, u, upper=True)
        k_up, b_up = self._tangent(d_up)
        ua = torch.where(
            convex, k_chord, torch.where(concave, k_mid, torch.where(up_ok, k_up, k_chord))
        )
        ub = torch.where(
            convex, b_chord, torch.where(concave, b_mid, torch.where(up_ok, b_up, b_chord))
        )
        d_lo, lo_ok = self._touch(l, u, upper=False)
        k_lo, b_lo = self._tangent(d_lo)
        la = torch.where(
            concave, k_chord, torch.where(convex, k_mid, torch.where(lo_ok, k_lo, k_chord))
        )
        lb = torch.where(
            concave, b_chord, torch.where(convex, b_mid, torch.where(lo_ok, b_lo, b_chord))
        )
        # rounding margin, relative to the function's scale (values lie in [-1, 1])
        margin = 1e-6 if l.dtype == torch.float32 else 1e-12
        degenerate = (u - l) <= TINY
        la = torch.where(degenerate, 0.0, la)
        ua = torch.where(degenerate, 0.0, ua)
        lb = torch.where(degenerate, fl, lb) - margin
        ub = torch.where(degenerate, fu, ub) + margin
        return la, lb, ua, ub
