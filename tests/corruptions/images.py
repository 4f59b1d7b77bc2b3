"""Test images: the digits, scaled up and coloured (natural-looking edges and flat regions)."""

import torch
import torch.nn.functional as F

from robustlab.data import load_digits_split


def digits_images(n: int = 32, size=(32, 32), rgb: bool = True, seed: int = 0) -> torch.Tensor:
    x = load_digits_split(train=False).x[:n]
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    if not rgb:
        return x
    g = torch.Generator().manual_seed(seed)
    fg = torch.rand(n, 3, 1, 1, generator=g) * 0.5 + 0.5
    bg = torch.rand(n, 3, 1, 1, generator=g) * 0.5
    return bg + (fg - bg) * x
