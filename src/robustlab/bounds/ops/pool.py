"""Max pooling: a sound linear relaxation over each window."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustlab.bounds.ops.base import Bounds, Op


@dataclass(eq=False)
class MaxPool(Op):
    """2-D max pooling (zero dilation, floor mode).

    Relaxation per window: the lower bound is the input with the largest lower bound
    (``max >= x_j``); the upper bound is that same input when its lower bound dominates every other
    upper bound in the window (the max is then exactly ``x_j``), else the constant ``max_j u_j``.
    """

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.max_pool2d(x, self.kernel, self.stride, self.padding)

    def ibp(self, b: Bounds) -> Bounds:
        return Bounds(self.forward(b.lower), self.forward(b.upper))

    def _windows(self, x: Tensor, fill: float) -> Tensor:
        """(B, C, k*k, L) windows of ``x`` padded with ``fill``."""
        b, c = x.shape[:2]
        ph, pw = self.padding
        x = nn.functional.pad(x, (pw, pw, ph, ph), value=fill)
        cols = nn.functional.unfold(
            x.reshape(b * c, 1, *x.shape[2:]), self.kernel, stride=self.stride
        )
        return cols.reshape(b, c, cols.shape[1], cols.shape[2])

    def relax_indices(self, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per output: flat input index of the chosen input, whether the max equals it exactly,
        and the constant upper bound ``max_j u_j``."""
        b, c, h, w = l.shape
        ph, pw = self.padding
        lw = self._windows(l, float("-inf"))
        uw = self._windows(u, float("-inf"))
        best = lw.argmax(2)  # (B, C, L)
        l_best = lw.gather(2, best[:, :, None]).squeeze(2)
        others = uw.scatter(2, best[:, :, None], float("-inf")).amax(2)
        exact = l_best >= others
        u_max = uw.amax(2)
        # flat index of the chosen input in the unpadded (h, w) grid
        hp, wp = h + 2 * ph, w + 2 * pw
        idx_pad = nn.functional.unfold(
            torch.arange(hp * wp, dtype=l.dtype, device=l.device).view(1, 1, hp, wp),
            self.kernel,
            stride=self.stride,
        )[0]  # (k*k, L)
        chosen = idx_pad.long()[best, torch.arange(best.shape[-1], device=l.device)]  # (B, C, L)
        r, q = chosen // wp - ph, chosen % wp - pw
        if (
            (r < 0) | (r >= h) | (q < 0) | (q >= w)
        ).any():  # a padding cell won: the window is all padding
            raise ValueError("max pooling window without inputs")
        return r * w + q, exact, u_max

    def backward(self, A: Tensor, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """Coefficients on the input and bias for a lower bound of ``A . maxpool(x)``."""
        m = A.shape[1]
        c, h, w = l.shape[1:]
        bsz = max(A.shape[0], l.shape[0])  # rows or bounds shared by the batch have batch 1
        index, exact, u_max = (
            t.expand(bsz, *t.shape[1:]) for t in self.relax_indices(l, u)
        )  # (B, C, L)
        a = A.reshape(A.shape[0], m, c, -1).expand(bsz, -1, -1, -1)
        pos, neg = a.clamp(min=0), a.clamp(max=0)
        ex = exact[:, None].to(a.dtype)
        coef = pos + neg * ex  # negative coefficients use x_j only where the max is exact
        bias = (neg * (1 - ex) * u_max[:, None]).flatten(2).sum(-1)
        a_in = a.new_zeros(bsz, m, c, h * w)
        a_in.scatter_add_(3, index[:, None].expand(-1, m, -1, -1), coef)
        return a_in.reshape(bsz, m, c, h, w), bias
