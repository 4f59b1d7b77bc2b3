"""``amax`` / ``amin`` over per-sample dimensions, relaxed like max pooling (``pool.py``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from robustlab.bounds.ops.base import Bounds, Op


@dataclass(eq=False)
class MaxReduce(Op):
    """``amax`` (``sign`` 1) or ``amin`` (-1, as ``-amax(-x)``) over ``dims`` (0 is the first
    per-sample dimension). Lower bound of the max: the input with the largest lower bound; upper
    bound: that input when its lower bound dominates every other upper bound, else the constant
    largest upper bound."""

    dims: tuple[int, ...]
    keepdim: bool = False
    sign: float = 1.0
    tracked = False  # float32: computed in float64 (backward.backward)

    def forward(self, x: Tensor) -> Tensor:
        d = tuple(i + 1 for i in self.dims)
        return torch.amax(x, d, self.keepdim) if self.sign > 0 else torch.amin(x, d, self.keepdim)

    def ibp(self, b: Bounds) -> Bounds:
        return Bounds(self.forward(b.lower), self.forward(b.upper))

    def _order(self, ndim: int) -> list[int]:
        kept = [i for i in range(ndim) if i not in self.dims]
        return [0] + [i + 1 for i in kept] + [i + 1 for i in self.dims]

    def relax_indices(self, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per output of ``amax(sign x)`` (flattened): the chosen input (index along the reduced
        entries), whether the max equals it exactly, and the largest upper bound."""
        lo, hi = (l, u) if self.sign > 0 else (-u, -l)
        order = self._order(l.dim() - 1)
        n = 1
        for d in self.dims:
            n *= l.shape[d + 1]
        lw = lo.permute(order).reshape(l.shape[0], -1, n)
        uw = hi.permute(order).reshape(l.shape[0], -1, n)
        best = lw.argmax(-1)
        l_best = lw.gather(-1, best[..., None])[..., 0]
        others = uw.scatter(-1, best[..., None], float("-inf")).amax(-1)
        return best, l_best >= others, uw.amax(-1)

    def backward(self, A: Tensor, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """Coefficients on the input and bias for a lower bound of ``A . amax(x)``."""
        bsz, m = A.shape[:2]
        best, exact, u_max = self.relax_indices(l, u)
        a = self.sign * A.reshape(bsz, m, best.shape[1])
        pos, neg = a.clamp(min=0), a.clamp(max=0)
        ex = exact[:, None].to(a.dtype)
        coef = pos + neg * ex
        bias = (neg * (1 - ex) * u_max[:, None]).flatten(2).sum(-1)
        order = self._order(l.dim() - 1)
        permuted = [l.shape[i] for i in order]
        a_in = a.new_zeros(bsz, m, best.shape[1], l[0].numel() // best.shape[1])
        a_in.scatter_add_(3, best[:, None, :, None].expand(-1, m, -1, 1), coef[..., None])
        a_in = a_in.reshape(bsz, m, *permuted[1:]) * self.sign
        inverse = [0] * len(order)
        for k, o in enumerate(order):
            inverse[o] = k
        a_in = a_in.permute(0, 1, *[i + 1 for i in inverse[1:]])
        return a_in, bias
