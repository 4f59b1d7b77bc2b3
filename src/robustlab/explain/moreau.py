"""MoreauGrad: the gradient of the Moreau envelope of the score."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustlab.errors import RobustlabError
from robustlab.explain.base import (
    ExplainResult,
    Target,
    blocks,
    check_positive,
    example_noise,
    register,
    run,
    shard_offset,
)


@register("moreaugrad")
@dataclass(frozen=True)
class MoreauGrad:
    """MoreauGrad (Zhang, Farnia et al. 2023, arXiv:2302.05294): (x - z*) / rho with z* the
    proximal point argmin_z f(z) + ||z - x||^2 / (2 rho) of the score f, found by ``n_steps``
    gradient steps of size ``lr`` from z = x; f is smoothed by Gaussian noise of standard
    deviation ``sigma`` (``n_samples`` draws per step, per input position and ``seed``; sigma
    0: the score itself). ``l1`` > 0 is Sparse MoreauGrad: an L1 penalty on z - x, applied by
    soft-thresholding after each step (attributions exactly 0 where the score is flat).
    rho -> 0 gives the gradient. n_steps x n_samples passes per input."""

    rho: float = 0.1
    n_steps: int = 30
    lr: float = 0.05
    sigma: float = 0.1
    n_samples: int = 4
    l1: float = 0.0
    batch_size: int = 512
    seed: int = 0
    shard: tuple[int, int] | None = None  # see base.shard_offset

    def __call__(self, model: nn.Module, x: Tensor, target: Target = None) -> ExplainResult:
        check_positive(n_steps=self.n_steps, n_samples=self.n_samples)
        if not (self.rho > 0 and self.lr > 0 and self.sigma >= 0 and self.l1 >= 0):
            raise RobustlabError(
                "moreaugrad needs rho > 0, lr > 0, sigma >= 0 and l1 >= 0; found "
                f"{self.rho}, {self.lr}, {self.sigma}, {self.l1}"
            )
        x0 = x.detach()
        n, s = self.n_steps, self.n_samples
        first = shard_offset(self)

        def body(passes, score):
            out = torch.zeros_like(x0)
            per = max(1, self.batch_size // s)  # inputs per block: s rows each
            for rows in blocks(len(x0), per):
                xr = x0[rows]
                z = xr.clone()
                ex = rows.repeat_interleave(s)
                for t in range(n):
                    zs = z.repeat_interleave(s, 0)
                    if self.sigma > 0:
                        k = torch.arange(s).repeat(len(rows)) + t * s
                        noise = example_noise(self.seed, ex + first, k, x0.shape[1:], x0)
                        zs = zs + self.sigma * noise
                    g = passes.gradient(zs, score, ex)
                    g = g.view(len(rows), s, *x0.shape[1:]).mean(1)
                    z = z - self.lr * (g + (z - xr) / self.rho)
                    if self.l1 > 0:
                        d = z - xr
                        z = xr + d.sign() * (d.abs() - self.lr * self.l1).clamp_min(0)
                out[rows] = (xr - z) / self.rho
            return out, None

        return run(self.name, model, x, target, self.batch_size, body)
