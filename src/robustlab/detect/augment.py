"""Random augmentations of image batches for self-supervised learning and BEYOND's neighbours
(SimCLR's crops, as random affine resampling: scale, shift, a small rotation; plus Gaussian
noise), batched in torch and differentiable in the input (so an adaptive attack can take
gradients through them)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from robustlab.errors import RobustlabError


@dataclass(frozen=True)
class Augment:
    """A random view of each image: zoom by a factor in [min_scale, 1] (a crop of the image,
    resampled to its size), shift by up to ``shift`` of the side, rotate by up to ``degrees``, add
    N(0, noise^2) per pixel, clip to [lower, upper]."""

    min_scale: float = 0.8
    shift: float = 0.125
    degrees: float = 10.0
    noise: float = 0.05
    lower: float = 0.0
    upper: float = 1.0

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if x.dim() != 4:
            raise RobustlabError(
                f"augmentations expect images (N, C, H, W); found shape {tuple(x.shape)}"
            )
        n = len(x)

        def u(lo: float, hi: float) -> Tensor:
            r = torch.rand(n, generator=generator, dtype=x.dtype, device=x.device)
            return lo + (hi - lo) * r

        scale = u(self.min_scale, 1.0)
        angle = u(-self.degrees, self.degrees) * (math.pi / 180)
        tx, ty = u(-2 * self.shift, 2 * self.shift), u(-2 * self.shift, 2 * self.shift)
        cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
        theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if self.noise > 0:
            eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            out = out + self.noise * eps
        return out.clamp(self.lower, self.upper)
