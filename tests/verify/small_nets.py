"""Small ReLU networks and box samples shared by the input-splitting tests."""

from __future__ import annotations

import copy

import torch
from torch import nn

from robustlab.verify.spec import Disjunct, Property


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


def threshold_property(net: nn.Module, n_in: int, seed: int, factor: float):
    """On [-1, 1]^n_in: the property "Y_0 >= t is unsafe" (three outputs), t the sampled
    maximum of Y_0 (20000 points) scaled by ``factor`` (below 1: reached; above: out of
    reach): (prop, t, top)."""
    lo, hi = -torch.ones(n_in, dtype=torch.float64), torch.ones(n_in, dtype=torch.float64)
    with torch.no_grad():
        top = float(copy.deepcopy(net).double()(box_sample(lo, hi, 20000, seed))[:, 0].max())
    t = top * factor if top > 0 else top / factor
    prop = Property(lo, hi, (Disjunct(torch.tensor([[-1.0, 0.0, 0.0]]), torch.tensor([-t])),))
    return prop, t, top
