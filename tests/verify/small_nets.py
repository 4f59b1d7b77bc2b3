"""Small ReLU networks and box samples shared by the input-splitting tests."""

from __future__ import annotations

import torch
from torch import nn


def relu_mlp(seed: int, n_in: int, width: int = 16, depth: int = 3, n_out: int = 3) -> nn.Module:
    """A seeded MLP: ``depth`` Linear + ReLU layers of ``width``, then a Linear to ``n_out``."""
    torch.manual_seed(seed)
    layers, k = [], n_in
    for _ in range(depth):
        layers += [nn.Linear(k, width), nn.ReLU()]
        k = width
    return nn.Sequential(*layers, nn.Linear(k, n_out)).eval()


def box_sample(lo: torch.Tensor, hi: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` float64 points of the box ``[lo, hi]``, the first quarter at its corners."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, lo.numel(), generator=g, dtype=torch.float64)
    u[: n // 4] = u[: n // 4].round()  # corners
    return lo + u * (hi - lo)
