"""Weather corruptions of ImageNet-C (Hendrycks & Dietterich 2019, arXiv:1903.12261): snow, frost
and fog (spatter, an extra one, is in ``spatter.py``).

Severity is monotone by construction (the mean distance to the clean image grows), which takes four
small departures from the published parameters, each at a step where they lower the distance:

- snow s3: blend 0.7 -> 0.66, so the blend of the brightened image falls strictly (0.8, 0.7, 0.66,
  0.65, 0.55); at s2 and s3 it was 0.7 both times and the two flake layers are about as strong, so
  the distance went up or down with the draw.
- frost s4, s5: frost weight 0.7 -> 0.75 and 0.75 -> 0.8, so image weight + frost weight stays 1.4
  as at s1-s3 (it fell to 1.35). With ``a + b`` fixed, ``out - x = b (f - x) + 0.4 x`` moves every
  pixel darker than the frost further from the clean one as ``b`` grows; the published s4 only
  lowered the image weight, which darkens the result back towards the clean image.
- fog s4, s5: strength 2.5 -> 2.75 and 3.0 -> 3.25, so the strength ``c`` rises at every step and
  the factor ``c / (peak + c)`` scaling the fog's departure from the image grows; at s4 only the
  fractal's decay changed, which lowers the distance on bright images, and on dark images (small
  peak) that factor barely grows from 3.0 on.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from robustlab.corruptions import _ops
from robustlab.corruptions._frost import frost_textures
from robustlab.corruptions.base import register

# loc, scale, zoom, threshold, blur radius, blur sigma, blend
SNOW = (
    (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
    (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
    (0.55, 0.3, 4, 0.9, 12, 8, 0.66),  # blend 0.7 published (see the module docstring)
    (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
    (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
)
# image weight, frost weight (published s4, s5: (0.65, 0.7), (0.6, 0.75))
FROST = ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.75), (0.6, 0.8))
# strength, fractal decay (published s4, s5 strengths: 2.5, 3.0)
FOG = ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.75, 1.5), (3.25, 1.4))


@register("snow", "weather", SNOW)
def snow(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    """Zoomed, thresholded Gaussian flakes, motion-blurred at a random angle in [-135, -45]
    degrees, added twice (the layer and its 180-degree rotation) over a brightened image."""
    loc, scale, zoom, threshold, radius, sigma, blend = SNOW[severity - 1]
    n, _, h, w = x.shape
    layer = loc + scale * torch.randn((n, 1, h, w), generator=gen, dtype=x.dtype, device=x.device)
    layer = _ops.clipped_zoom(layer, zoom)
    layer = torch.where(layer < threshold, torch.zeros_like(layer), layer).clamp(0, 1)
    angle = torch.rand(n, generator=gen, dtype=torch.float64, device=x.device) * 90 - 135
    layer = _ops.motion_blur(layer, radius, sigma, angle)
    layer = torch.round(layer * 255) / 255
    x = blend * x + (1 - blend) * torch.maximum(x, _ops.gray(x) * 1.5 + 0.5)
    return (x + layer + layer.flip(-2, -1)).clamp(0, 1)


@lru_cache(maxsize=4)
def _enlarged(size: tuple[int, int], dtype: torch.dtype, device: str) -> Tensor:
    """The frost textures enlarged (bicubic) to ``size``, kept for the next call."""
    tex = frost_textures().to(device=device, dtype=dtype)
    return F.interpolate(tex, size=size, mode="bicubic", align_corners=False).clamp(0, 1)


def _frost_layer(n: int, h: int, w: int, gen: torch.Generator, dtype, device) -> Tensor:
    """A random crop of a random frost texture per image; textures smaller than the image are
    first enlarged (bicubic), with the reference's 1.1 margin."""
    th, tw = frost_textures().shape[-2:]
    factor = 1.0 if (th >= h and tw >= w) else max(h / th, w / tw)
    factor *= 1.1
    size = (int(math.ceil(th * factor)), int(math.ceil(tw * factor)))
    tex = _enlarged(size, dtype, str(device))
    which = torch.randint(len(tex), (n,), generator=gen, device=gen.device).to(device)
    top = torch.randint(size[0] - h, (n,), generator=gen, device=gen.device).to(device)
    left = torch.randint(size[1] - w, (n,), generator=gen, device=gen.device).to(device)
    rows = top[:, None] + torch.arange(h, device=device)  # (n, h)
    cols = left[:, None] + torch.arange(w, device=device)  # (n, w)
    return tex[
        which[:, None, None, None],
        torch.arange(3, device=device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


@register("frost", "weather", FROST)
def frost(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    """``a x + b frost`` with a random crop of one of five procedural frost textures."""
    a, b = FROST[severity - 1]
    n, c, h, w = x.shape
    layer = _frost_layer(n, h, w, gen, x.dtype, x.device)
    if c == 1:
        layer = _ops.gray(layer)
    return (a * x + b * layer).clamp(0, 1)


@register("fog", "weather", FOG)
def fog(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    """A diamond-square plasma fractal added to the image, then rescaled by ``max / (max + c)``."""
    strength, decay = FOG[severity - 1]
    n, c, h, w = x.shape
    size = 1 << (max(h, w, 3) - 1).bit_length()  # the reference's max also counts the 3 channels
    plasma = _ops.plasma_fractal(n, size, decay, gen)[:, None, :h, :w].to(x.dtype)
    peak = x.amax((1, 2, 3), keepdim=True)
    return ((x + strength * plasma) * peak / (peak + strength)).clamp(0, 1)
