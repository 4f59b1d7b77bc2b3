"""Interval arithmetic in float64 with outward rounding, for bounds through training (FullCert):
products in midpoint-radius form (Rump 1999), every result widened by the worst rounding of any
float64 evaluation at a point of its operands' intervals, so that a float64 computation at any
such point lies inside."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

U = 2.0**-53
TINY = 2.0**-1074


def _gamma(n: int) -> float:
    k = (n + 4) * U
    return k / (1 - k)


def down(v: Tensor) -> Tensor:
    return torch.nextafter(v, v.new_tensor(-torch.inf))


def up(v: Tensor) -> Tensor:
    return torch.nextafter(v, v.new_tensor(torch.inf))


@dataclass(frozen=True)
class Interval:
    """Elementwise bounds ``lo <= hi`` (float64 tensors of one shape)."""

    lo: Tensor
    hi: Tensor

    @staticmethod
    def point(v: Tensor) -> Interval:
        v = v.detach().to(torch.float64)
        return Interval(v, v)

    @staticmethod
    def around(v: Tensor, radius: float) -> Interval:
        """``[v - radius, v + radius]`` rounded outward."""
        v = v.detach().to(torch.float64)
        return Interval(down(v - radius), up(v + radius))

    def mid_rad(self) -> tuple[Tensor, Tensor]:
        """(m, r) with ``[m - r, m + r]`` containing the interval."""
        m = (self.lo + self.hi) / 2
        return m, up(torch.maximum(self.hi - m, m - self.lo))

    def sane(self) -> Interval:
        """NaN bounds (from inf - inf once bounds overflow) replaced by the infinite ones."""
        lo = torch.where(torch.isnan(self.lo), -torch.inf, self.lo)
        return Interval(lo, torch.where(torch.isnan(self.hi), torch.inf, self.hi))

    @property
    def width(self) -> Tensor:
        return self.hi - self.lo

    def contains(self, v: Tensor) -> Tensor:
        v = v.to(torch.float64)
        return (self.lo <= v) & (v <= self.hi)

    def hull(self, v: Tensor) -> Interval:
        v = v.to(torch.float64)
        return Interval(torch.minimum(self.lo, v), torch.maximum(self.hi, v))

    def __add__(self, other: Interval) -> Interval:
        return Interval(down(self.lo + other.lo), up(self.hi + other.hi))

    def __sub__(self, other: Interval) -> Interval:
        return Interval(down(self.lo - other.hi), up(self.hi - other.lo))

    def scale(self, c: float) -> Interval:
        """``c * self`` for a number c >= 0."""
        return Interval(down(self.lo * c), up(self.hi * c))

    def relu(self) -> Interval:
        return Interval(self.lo.clamp_min(0), self.hi.clamp_min(0))

    def t(self) -> Interval:
        return Interval(self.lo.transpose(-2, -1), self.hi.transpose(-2, -1))

    def sum(self, dim: int) -> Interval:
        n = self.lo.shape[dim]
        slack = _gamma(n) * torch.maximum(self.lo.abs(), self.hi.abs()).sum(dim)
        return Interval(down(self.lo.sum(dim) - slack), up(self.hi.sum(dim) + slack))


def matmul(a: Interval, b: Interval) -> Interval:
    """An enclosure of ``A @ B`` for every A in ``a`` and B in ``b`` (2-d), and of its float64
    evaluation: ``am bm +- (|am| br + ar (|bm| + br) + gamma_n (|am| + ar)(|bm| + br))``."""
    am, ar = a.mid_rad()
    bm, br = b.mid_rad()
    n = am.shape[-1]
    center = am @ bm
    abs_a, abs_b = am.abs() + ar, bm.abs() + br
    radius = am.abs() @ br + ar @ abs_b
    g = _gamma(n + 2)
    radius = up(radius * (1 + 2 * g) + 2 * g * (abs_a @ abs_b) + (n + 2) * TINY)
    return Interval(down(center - radius), up(center + radius))


def relu_backward(pre: Interval, grad: Interval) -> Interval:
    """``grad * relu'(z)`` for z in ``pre`` (relu'(0) = 0, as torch): grad where z > 0 surely,
    0 where z <= 0 surely, the hull of 0 and grad otherwise."""
    on, off = pre.lo > 0, pre.hi <= 0
    zero = torch.zeros_like(grad.lo)
    lo = torch.where(on, grad.lo, torch.where(off, zero, grad.lo.clamp_max(0)))
    hi = torch.where(on, grad.hi, torch.where(off, zero, grad.hi.clamp_min(0)))
    return Interval(lo, hi)


def softmax(z: Interval) -> Interval:
    """Bounds on ``softmax(z)_i = 1 / (1 + sum_{j != i} exp(z_j - z_i))`` over the box: exponents
    rounded outward, then widened by ``8 (K + 8 + spread) u`` relative, which covers the rounding
    of exp, the sums and the quotient here and in any float64 evaluation (whose shifted exponents
    carry an error of u times the row's spread)."""
    k = z.lo.shape[-1]
    eye = torch.eye(k, dtype=torch.bool, device=z.lo.device)
    spread = (z.hi.amax(-1, keepdim=True) - z.lo.amin(-1, keepdim=True)).abs()
    w = 8 * (k + 8 + spread) * U

    def part(own: Tensor, other: Tensor, outward) -> Tensor:  # 1 / (1 + sum_j exp(d_ij))
        d = outward(other[..., None, :] - own[..., :, None]).masked_fill(eye, -torch.inf)
        return 1 / (1 + torch.exp(d).sum(-1))

    lo = (part(z.lo, z.hi, up) * (1 - w)).clamp(0, 1)
    hi = (part(z.hi, z.lo, down) * (1 + w)).clamp(0, 1)
    return Interval(lo, hi)
