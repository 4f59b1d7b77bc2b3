"""Gradient attributions: saliency, input x gradient, SmoothGrad (streamed in blocks)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from robustlab.explain.base import (
    ExplainResult,
    Passes,
    Score,
    Target,
    blocks,
    check_positive,
    register,
    run,
)


def _gradients(passes: Passes, score: Score, x: Tensor, batch_size: int) -> Tensor:
    out = torch.empty_like(x)
    for rows in blocks(len(x), batch_size):
        out[rows] = passes.gradient(x[rows], score, rows)
    return out


@register("saliency")
@dataclass(frozen=True)
class Saliency:
    """Saliency maps (Simonyan et al. 2014, arXiv:1312.6034): the gradient, absolute by default."""

    abs: bool = True
    batch_size: int = 512

    def __call__(self, model: nn.Module, x: Tensor, target: Target = None) -> ExplainResult:
        def body(passes, score):
            g = _gradients(passes, score, x.detach(), self.batch_size)
            return (g.abs() if self.abs else g), None

        return run(self.name, model, x, target, self.batch_size, body)


@register("input-x-gradient")
@dataclass(frozen=True)
class InputXGradient:
    """Input x gradient (Shrikumar et al. 2016, arXiv:1605.01713)."""

    signed: ClassVar[bool] = True  # attributions have a sign (a diverging colour map)

    batch_size: int = 512

    def __call__(self, model: nn.Module, x: Tensor, target: Target = None) -> ExplainResult:
        def body(passes, score):
            return x.detach() * _gradients(passes, score, x.detach(), self.batch_size), None

        return run(self.name, model, x, target, self.batch_size, body)


@register("smoothgrad")
@dataclass(frozen=True)
class SmoothGrad:
    """SmoothGrad (Smilkov et al. 2017, arXiv:1706.03825): the mean gradient over Gaussian noise
    of standard deviation ``sigma`` (in input units); a running sum over blocks of rows."""

    signed: ClassVar[bool] = True  # attributions have a sign (a diverging colour map)

    n_samples: int = 50
    sigma: float = 0.15
    batch_size: int = 512
    seed: int = 0
    shard: tuple[int, int] | None = None  # see base.shard_offset

    def __call__(self, model: nn.Module, x: Tensor, target: Target = None) -> ExplainResult:
        check_positive(n_samples=self.n_samples)
        x0 = x.detach()
        ns = self.n_samples
        first, whole = self.shard or (0, len(x0))
        start, stop = first * ns, (first + len(x0)) * ns  # x's rows in the whole run's stream

        def body(passes, score):
            gen = torch.Generator(device=x0.device).manual_seed(self.seed)
            total = torch.zeros(x0.shape, dtype=torch.float64, device=x0.device)
            for rows in blocks(whole * ns, self.batch_size):  # the whole run's blocks and draws
                if rows[0] >= stop:
                    break
                noise = torch.randn(
                    (len(rows), *x0.shape[1:]), generator=gen, dtype=x0.dtype, device=x0.device
                )
                if self.shard is not None:  # a shard: the rows of other shards are drawn, unused
                    keep = (rows >= start) & (rows < stop)
                    if not keep.any():
                        continue
                    rows, noise = rows[keep] - start, noise[keep.to(noise.device)]
                ex = rows // ns
                g = passes.gradient(x0[ex] + self.sigma * noise, score, ex)
                total.index_add_(0, ex.to(x0.device), g.double())
            return (total / ns).to(x0.dtype), None

        return run(self.name, model, x, target, self.batch_size, body)
