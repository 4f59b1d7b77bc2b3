"""IBP initialisation (Shi et al. 2021, arXiv:2103.17268): weights drawn so that interval bounds
neither explode nor vanish with depth at initialisation."""

from __future__ import annotations

import math

import torch
from torch import nn


def ibp_init(model: nn.Module, *, generator: torch.Generator | None = None) -> nn.Module:
    """Re-initialise every Linear and Conv layer in place: ``w ~ N(0, sigma^2)`` with
    ``sigma = sqrt(2 pi) / fan_in`` and zero biases, so that ``E |W| r = r`` for a radius ``r`` of
    which a ReLU keeps half (Shi et al. 2021, section 3.2). Returns the model."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                fan_in = m.weight[0].numel()
                sigma = math.sqrt(2 * math.pi) / fan_in
                m.weight.copy_(
                    torch.randn(m.weight.shape, generator=generator, dtype=m.weight.dtype) * sigma
                )
                if m.bias is not None:
                    m.bias.zero_()
    return model


def reset_parameters(model: nn.Module, *, seed: int = 0) -> nn.Module:
    """Torch's default initialisation of every layer that has one, with a fixed seed."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for m in model.modules():
            if m is not model and hasattr(m, "reset_parameters"):
                m.reset_parameters()
    return model
