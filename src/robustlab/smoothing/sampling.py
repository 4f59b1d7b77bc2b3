"""Batched Monte Carlo sampling for randomized smoothing: class counts of a base classifier under
Gaussian noise, many inputs per forward pass when ``n`` is smaller than the batch."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def sample_counts(
    model: nn.Module,
    x: Tensor,
    sigma: float,
    n: int,
    num_classes: int,
    *,
    batch_size: int = 1000,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Counts of the base classifier's predictions on ``n`` noisy copies ``x + N(0, sigma^2 I)``
    of each input: shape (len(x), num_classes). Every forward pass holds ``batch_size`` noisy
    inputs (the last one fewer), whichever inputs they belong to."""
    m = len(x)
    flat = torch.zeros(m * num_classes, dtype=torch.long, device=x.device)
    total = m * n
    with torch.inference_mode():
        for start in range(0, total, batch_size):
            stop = min(start + batch_size, total)
            owner = torch.arange(start, stop, device=x.device) // n
            noise = torch.randn(
                (stop - start, *x.shape[1:]), generator=generator, dtype=x.dtype, device=x.device
            )
            pred = model(noise.mul_(sigma).add_(x[owner])).argmax(1)
            flat += torch.bincount(owner * num_classes + pred, minlength=m * num_classes)
    return flat.view(m, num_classes)
