"""Small networks and data whose Hessian torch.func computes exactly (float64)."""

from __future__ import annotations

import torch
from torch import nn

from robustlab.data import Dataset


def tiny(seed: int = 0, act: type = nn.Tanh) -> nn.Sequential:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(5, 6), act(), nn.Linear(6, 3)).double()


def blobs(n: int = 40, seed: int = 0) -> Dataset:
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(n, 5, generator=gen, dtype=torch.float64) + torch.nn.functional.one_hot(y, 5)
    return Dataset("blobs", x, y, float(x.min()), float(x.max()))


def exact_hessian(model: nn.Module, data: Dataset) -> tuple[torch.Tensor, list[int]]:
    """The full Hessian of the mean cross-entropy in the flattened parameters, and the sizes of
    the parameter tensors in order."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(flat):
        parts = torch.split(flat, sizes)
        params = {n: t.reshape(s) for n, t, s in zip(names, parts, shapes, strict=True)}
        out = torch.func.functional_call(model, params, (data.x,))
        return nn.functional.cross_entropy(out, data.y)

    return torch.func.hessian(loss)(flat0), sizes


def cnn(seed: int = 0) -> nn.Sequential:
    """A small convolutional network for (1, 4, 4) inputs and 3 classes."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 16), nn.ReLU(),
        nn.Linear(16, 3),
    )  # fmt: skip


def data(n: int = 48) -> Dataset:
    """Random (1, 4, 4) images in [0, 1] with labels 0, 1, 2 in turn."""
    g = torch.Generator().manual_seed(0)
    return Dataset("rand", torch.rand(n, 1, 4, 4, generator=g), torch.arange(n) % 3)
