"""The global L2 Lipschitz bound lives in ``robustlab.bounds.lipschitz`` (per-layer norms bounded
rigorously by Gram iteration, one implementation for explain and certify); its names as explain
has always exported them."""

from __future__ import annotations

from torch import nn

from robustlab.bounds.lipschitz import GlobalLipschitz, global_lipschitz, module_norm
from robustlab.bounds.norms import matrix_norm_upper as linear_norm


def conv2d_norm(m: nn.Conv2d, in_shape: tuple[int, ...]) -> float:
    """An upper bound on the spectral norm of a zero-padded 2-d convolution on (C, H, W) inputs."""
    return module_norm(m, in_shape)


__all__ = ["GlobalLipschitz", "conv2d_norm", "global_lipschitz", "linear_norm", "module_norm"]
