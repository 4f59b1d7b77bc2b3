"""Softmax relaxed as one function of its row (Wei et al. 2023, "Convex Bounds on the Softmax
Function with Applications to Robustness Verification", arXiv:2303.01713, the LSE bounds).

On a box ``l <= x <= u`` (per row of ``n`` entries), with ``s_k(x) = e^{x_k} / sum_j e^{x_j}``:

- lower: each ``e^{x_j}`` lies below a line ``k_j x_j + c_j`` on ``[l_j, u_j]`` (any slope, the
  intercept from the larger end: exp is convex), so ``s_k(x) >= e^{x_k} / SE(x)`` with ``SE`` the
  sum of those lines, an affine function, positive on the box. ``e^t / s`` is jointly convex for
  ``s > 0`` (Hessian ``e^t / s^3 [[s, -1], [-1, 2 / s]]``, determinant ``e^{2t} / s^4``), so
  ``e^{x_k} / SE(x)`` is convex and its tangent at any point ``x0`` of the box lies below it.
- upper: ``z_k = x_k - LSE(x)`` lies in ``[zl_k, zu_k]`` (interval bounds, exact: ``z_k`` grows
  with ``x_k`` and falls with the others), and ``s_k = e^{z_k} <= a_k + c_k z_k`` there (the
  chord, ``c_k >= 0``): ``a_k + c_k (x_k - LSE(x))`` is concave (LSE is convex), so its tangent at
  ``x0`` lies above it.

With a mask (``keep``: the entries that take part, attention's unmasked keys), each row is the
softmax over its kept entries only: a masked entry's output is exactly 0 (its lines are 0, and
no coefficient reaches it) and its input takes no part in any bound, so masked scores never
enter the arithmetic (no ``-inf - -inf``). Every row keeps at least one entry (``check_keep``).

Both tangents are taken at the box's centre. Every intercept is moved outward by a rounding
margin of ``ULPS`` units of float64 precision of the magnitudes it is computed from, so rounding
of the slopes, the chords and the tangents cannot make a line cross the function. Rows whose
bounds are not finite, or whose arithmetic is not, get the constant lines 0 and 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from robustlab.bounds.ops.base import Bounds
from robustlab.bounds.ops.bilinear import Bilinear
from robustlab.errors import UnsupportedOperation

ULPS = 64
EPS = torch.finfo(torch.float64).eps


def _exp_upper_line(l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """``(k, c)`` with ``e^x <= k x + c`` on ``[l, u]`` (elementwise; ``l <= u <= 0`` after the
    row's shift, so every value is at most 1): the chord's slope (``e^l expm1(u - l) / (u - l)``,
    ``e^l`` on a point) and the larger end's intercept, raised by its rounding margin."""
    w = u - l
    el, eu = torch.exp(l), torch.exp(u)
    safe = torch.where(w > 0, w, 1.0)
    k = torch.where(w > 1, (eu - el) / safe, el * torch.expm1(w.clamp(max=1)) / safe)
    k = torch.where(w > 0, k, el)
    c = torch.maximum(el - k * l, eu - k * u)
    return k, c + ULPS * EPS * (eu + k * torch.maximum(l.abs(), u.abs()) + c.abs())


def _last(t: Tensor, dim: int) -> Tensor:
    return t.movedim(dim, -1)


def check_keep(keep: Tensor, dim: int, what: str) -> None:
    """Refuse a mask (per-sample, rows along ``dim``) with a row whose entries are all masked:
    PyTorch's result there depends on the path (nan from ``torch.softmax`` and
    ``MultiheadAttention`` with weights, 0 from ``scaled_dot_product_attention``)."""
    empty = ~keep.any(dim)
    if bool(empty.any()):
        at = [int(i) for i in empty.nonzero()[0]]
        raise UnsupportedOperation(
            f"{what}: every entry of softmax row {at} is masked (a query without keys: "
            "PyTorch gives nan or 0 depending on the path); keep at least one key per query"
        )


@dataclass(eq=False)
class Softmax(Bilinear):
    """``softmax(x)`` along per-sample axis ``dim``, relaxed jointly in its row (LSE bounds);
    with ``keep`` (bool, the per-sample shape), over the kept entries of each row only."""

    dim: int
    keep: Tensor | None = None
    n_inputs: int = 1
    tracked: bool = False  # float32: computed in float64 (backward.backward)
    # the lines of the last bounds seen (branch and bound reuses the root's bounds on every
    # domain): those tensors, their in-place version counters, the lines
    _last: tuple | None = field(default=None, repr=False)

    def forward(self, x):
        if self.keep is not None:
            x = x.masked_fill(~self.keep.to(x.device), float("-inf"))
        return torch.softmax(x, self.dim + 1)

    def _kept(self, like: Tensor) -> Tensor:
        """The mask with rows last, on ``like``'s (batch, ..., n) shape; all True without one."""
        if self.keep is None:
            return torch.ones((), dtype=torch.bool, device=like.device).expand(like.shape)
        return _last(self.keep.to(like.device)[None], self.dim + 1).expand(like.shape)

    def _z_bounds(self, l: Tensor, u: Tensor, K: Tensor) -> tuple[Tensor, Tensor]:
        """Bounds of ``z_k = x_k - LSE(x)`` (rows last, the LSE over the kept entries ``K``),
        widened by their rounding margin; 0 at masked entries."""
        n = l.shape[-1]
        eye = torch.eye(n, dtype=torch.bool, device=l.device)
        lo_rows = torch.where(eye, l[..., None, :], u[..., None, :])  # x_k at l, others at u
        hi_rows = torch.where(eye, u[..., None, :], l[..., None, :])
        if self.keep is not None:
            drop = ~K[..., None, :]  # masked entries leave every sum (each row keeps one)
            lo_rows = lo_rows.masked_fill(drop, float("-inf"))
            hi_rows = hi_rows.masked_fill(drop, float("-inf"))
        lse_lo, lse_hi = torch.logsumexp(lo_rows, -1), torch.logsumexp(hi_rows, -1)
        zl, zu = l - lse_lo, u - lse_hi
        zl = zl - ULPS * EPS * (l.abs() + lse_lo.abs() + 1.0)
        zu = torch.minimum(zu + ULPS * EPS * (u.abs() + lse_hi.abs() + 1.0), torch.zeros_like(zu))
        return torch.where(K, zl, 0.0), torch.where(K, zu, 0.0)

    def _rows(self, b: Bounds) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(l, u, K, ok)`` with rows last: bounds (0 at masked entries), the kept entries, and
        the rows whose kept bounds are finite (the others: 0 at their entries too)."""
        l, u = (_last(t.double(), self.dim + 1) for t in (b.lower, b.upper))
        K = self._kept(l)
        l, u = torch.where(K, l, 0.0), torch.where(K, u, 0.0)
        ok = torch.isfinite(l).all(-1, keepdim=True) & torch.isfinite(u).all(-1, keepdim=True)
        return torch.where(ok, l, 0.0), torch.where(ok, u, 0.0), K, ok

    def ibp(self, b: Bounds) -> Bounds:
        l, u, K, ok = self._rows(b)
        zl, zu = self._z_bounds(l, u, K)
        lo = torch.exp(zl) * (1 - ULPS * EPS)
        hi = torch.exp(zu) * (1 + ULPS * EPS)
        lo = torch.where(ok & torch.isfinite(lo), lo.clamp(0.0, 1.0), 0.0)
        hi = torch.where(ok & torch.isfinite(hi), hi.clamp(0.0, 1.0), 1.0)
        lo, hi = torch.where(K, lo, 0.0), torch.where(K, hi, 0.0)  # masked: exactly 0
        lo, hi = (t.movedim(-1, self.dim + 1).to(b.lower.dtype) for t in (lo, hi))
        return Bounds(lo, torch.maximum(lo, hi))

    def lines(self, b: Bounds):
        """Per row (rows last): ``(L0, kappa / S0, bl)`` of the lower lines
        ``s_k >= L0_k x_k - L0_k (kappa / S0) . x + bl_k`` and ``(c, s0, bu)`` of the upper lines
        ``s_k <= c_k x_k - c_k s0 . x + bu_k``."""
        l, u, K, ok = self._rows(b)
        m = u.masked_fill(~K, float("-inf")).amax(-1, keepdim=True)  # every row keeps one
        ls, us = l - m, u - m  # shifted: every exponential at most 1
        x0 = (l + u) / 2
        x0s = (ls + us) / 2
        w = x0.abs() + (u - l) / 2  # |x| on the box, entrywise, for the rounding margins
        # lower: tangent of e^{x_k} / SE(x) at x0
        k, c = _exp_upper_line(ls, us)
        k, c = torch.where(K, k, 0.0), torch.where(K, c, 0.0)  # masked: no term of SE
        s0 = (k * x0s + c).sum(-1, keepdim=True)
        L0 = torch.where(K, torch.exp(x0s) / s0, 0.0)
        q = k / s0  # the gradient of L_k is L0_k (e_k - q)
        lin = L0 * x0 - L0 * (q * x0).sum(-1, keepdim=True)  # gradient . x0
        grad_w = L0 * (w + (q * w).sum(-1, keepdim=True))  # sum_j |gradient_j| w_j, bounded
        bl = L0 - lin - ULPS * EPS * (1.0 + L0 + grad_w)
        # upper: tangent of a + c (x_k - LSE(x)) at x0, with e^z <= a + c z on [zl, zu]
        zl, zu = self._z_bounds(l, u, K)
        cu, au = _exp_upper_line(zl, zu)
        cu = torch.where(K, cu, 0.0)
        x0k = x0s.masked_fill(~K, float("-inf"))
        lse0 = torch.logsumexp(x0k, -1, keepdim=True) + m
        sm0 = torch.softmax(x0k, -1)
        z0 = x0 - lse0
        u0 = au + cu * z0
        linu = cu * x0 - cu * (sm0 * x0).sum(-1, keepdim=True)
        gradu_w = cu * (w + (sm0 * w).sum(-1, keepdim=True))
        mag = 1.0 + au.abs() + cu * (x0.abs() + lse0.abs()) + gradu_w
        bu = u0 - linu + ULPS * EPS * mag
        bl, bu = torch.where(K, bl, 0.0), torch.where(K, bu, 0.0)  # masked: exactly 0
        good = ok & torch.isfinite(bl).all(-1, keepdim=True) & torch.isfinite(bu).all(-1, True)
        good = good & torch.isfinite(q).all(-1, keepdim=True) & (s0 > 0).all(-1, keepdim=True)
        zero = torch.zeros_like(l)
        L0, q, bl = (torch.where(good, t, zero) for t in (L0, q, bl))
        cu, sm0 = torch.where(good, cu, zero), torch.where(good, sm0, zero)
        bu = torch.where(good, bu, K.to(bu.dtype))
        return (L0, q, bl), (cu, sm0, bu)

    def backward(self, A, b: Bounds, in_shapes, alpha=None):
        """Coefficients on the input and the bias of a lower bound of ``A . softmax(x)``."""
        (L0, q, bl), (cu, sm0, bu) = self._cached_lines(b)
        d = self.dim + 2  # A: (batch, rows, *shape)
        a = _last(A.double(), d)
        pos, neg = a.clamp(min=0), a.clamp(max=0)
        L0, q, bl, cu, sm0, bu = (t[:, None] for t in (L0, q, bl, cu, sm0, bu))
        pl, nu = pos * L0, neg * cu
        a_in = pl - pl.sum(-1, keepdim=True) * q + nu - nu.sum(-1, keepdim=True) * sm0
        bias = (pos * bl + neg * bu).flatten(2).sum(-1)
        return [a_in.movedim(-1, d).to(A.dtype)], bias.to(A.dtype)

    def _cached_lines(self, b: Bounds):
        lo, hi = b.lower, b.upper
        key = (lo, hi, lo._version, hi._version)
        hit = self._last
        if hit is not None and hit[0] is lo and hit[1] is hi and hit[2:4] == key[2:]:
            return hit[4]
        lines = self.lines(b)
        if not (lo.requires_grad or hi.requires_grad):  # (alpha-CROWN's graphs are not kept)
            self._last = (*key, lines)
        return lines

    def radius(self, x0: Tensor, r: Tensor) -> Tensor:
        """``|J(x0)| r``: the linearised softmax's output radius for input radius ``r``."""
        s = self.forward(x0)
        d = self.dim + 1
        return s * ((1 - 2 * s) * r + (s * r).sum(d, keepdim=True))

    def linearised(self, x0: Tensor, x: Tensor) -> Tensor:
        """``softmax(x0) + J(x0) (x - x0)``."""
        s = self.forward(x0)
        v = x - x0
        return s + s * (v - (s * v).sum(self.dim + 1, keepdim=True))
