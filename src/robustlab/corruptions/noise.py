"""Noise corruptions of ImageNet-C (Hendrycks & Dietterich 2019, arXiv:1903.12261): Gaussian, shot
(Poisson), impulse (salt and pepper) and speckle noise, independently per pixel and channel."""

from __future__ import annotations

import torch
from torch import Tensor

from robustlab.corruptions.base import register

GAUSSIAN = (0.08, 0.12, 0.18, 0.26, 0.38)
SHOT = (60, 25, 12, 5, 3)
IMPULSE = (0.03, 0.06, 0.09, 0.17, 0.27)
SPECKLE = (0.15, 0.2, 0.35, 0.45, 0.6)


def _normal(x: Tensor, gen: torch.Generator) -> Tensor:
    return torch.randn(x.shape, generator=gen, dtype=x.dtype, device=x.device)


@register("gaussian_noise", "noise", GAUSSIAN)
def gaussian_noise(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    """Additive Gaussian noise with standard deviation ``c``."""
    return (x + GAUSSIAN[severity - 1] * _normal(x, gen)).clamp(0, 1)


@register("shot_noise", "noise", SHOT)
def shot_noise(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    """Poisson photon noise: ``Poisson(c x) / c``."""
    c = SHOT[severity - 1]
    return (torch.poisson(x * c, generator=gen) / c).clamp(0, 1)


@register("impulse_noise", "noise", IMPULSE)
def impulse_noise(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    """Salt and pepper: a fraction ``c`` of the values set to 0 or 1 with equal odds
    (``skimage.util.random_noise(mode='s&p')``)."""
    c = IMPULSE[severity - 1]
    u = torch.rand((2, *x.shape), generator=gen, dtype=x.dtype, device=x.device)
    flipped = u[0] < c
    return torch.where(flipped, (u[1] < 0.5).to(x.dtype), x)


@register("speckle_noise", "noise", SPECKLE, common=False)
def speckle_noise(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    """Multiplicative Gaussian noise: ``x + x * N(0, c^2)``."""
    return (x + x * SPECKLE[severity - 1] * _normal(x, gen)).clamp(0, 1)
