"""Small models with known answers for the attack tests."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def linear_classifier(d: int = 10, k: int = 4, seed: int = 0) -> nn.Linear:
    """A k-class linear classifier on d inputs."""
    gen = torch.Generator().manual_seed(seed)
    lin = nn.Linear(d, k)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(k, d, generator=gen))
        lin.bias.copy_(torch.randn(k, generator=gen) * 0.3)
    return lin


def interior_points(n: int, d: int, seed: int = 0) -> Tensor:
    """Points in [0.3, 0.7]^d, so that balls of radius <= 0.3 stay inside [0, 1]^d."""
    return torch.rand(n, d, generator=torch.Generator().manual_seed(seed)) * 0.4 + 0.3


def minimal_distance(lin: nn.Linear, x: Tensor, y: Tensor, norm: str) -> Tensor:
    """The exact minimal Linf or L2 perturbation that changes the label of a linear classifier
    (when the data range does not bind): min_j (z_y - z_j) / ||w_y - w_j||_dual."""
    with torch.no_grad():
        z = lin(x)
        w = lin.weight
        diff_w = w[y][:, None, :] - w[None, :, :]  # (N, K, d)
        dual = diff_w.abs().sum(2) if norm == "inf" else diff_w.norm(dim=2)
        gap = z.gather(1, y[:, None]) - z
        dist = gap / dual.clamp_min(1e-12)
        dist[torch.arange(len(y)), y] = torch.inf
        return dist.min(1).values


class Quantised(nn.Module):
    """A network behind a non-differentiable quantisation of its input: zero input gradients."""

    def __init__(self, net: nn.Module, levels: int = 4) -> None:
        super().__init__()
        self.net, self.levels = net, levels

    def forward(self, x: Tensor) -> Tensor:
        return self.net(torch.round(x * self.levels) / self.levels)


class Noisy(nn.Module):
    """A randomized model: Gaussian noise on the input at every call."""

    def __init__(self, net: nn.Module, sigma: float = 0.1) -> None:
        super().__init__()
        self.net, self.sigma = net, sigma

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x + self.sigma * torch.randn_like(x))


class Shaky(nn.Module):
    """A randomized model whose gradients are mostly noise: a small, high-frequency wobble with a
    random phase at every call is added to the logits (values move by ~``amplitude``, input
    gradients by ~``amplitude * frequency``); their expectation is the network's gradient."""

    def __init__(self, net: nn.Module, d: int, k: int, amplitude: float = 0.005,
                 frequency: float = 1000.0, seed: int = 0) -> None:  # fmt: skip
        super().__init__()
        self.net, self.amplitude, self.frequency = net, amplitude, frequency
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("mix", torch.randint(0, 2, (d, k), generator=gen).float() * 2 - 1)

    def forward(self, x: Tensor) -> Tensor:
        phase = torch.rand_like(x) * (2 * math.pi)
        return self.net(x) + (self.amplitude * torch.sin(self.frequency * x + phase)) @ self.mix
