"""Spatter, an extra corruption of ImageNet-C (Hendrycks & Dietterich 2019, arXiv:1903.12261):
water drops (severities 1-3) or mud (4-5) from a thresholded, blurred Gaussian field.

The water branch follows the reference's OpenCV pipeline in torch: Canny edges of the liquid layer,
a distance transform capped at 20 (exact Euclidean where OpenCV uses its 5 x 5 chamfer mask), box
blur, histogram equalisation, an emboss filter, box blur, and a pale turquoise tint weighted by it.

One departure from the published severities: at s4 and s5 the reference draws mud alone, here the
mud splashes are drawn and s3's water drops are added over them. Water lightens an image and mud
darkens it, so the step from water (s3) to mud (s4) lowered the distance to the clean image on dark
images (and raised it on light ones); with the drops kept, s4 and s5 add the mud to what s3 did. The
water field is drawn first and the mud field second, so s4 and s5 share s3's drops, and with the
same draw the published s5 mud (loc 0.67, scale 0.4) covers every pixel s4's (0.65, 0.3) covers.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import distance_transform_edt, label
from torch import Tensor

from robustlab.corruptions import _ops
from robustlab.corruptions.base import register

# loc, scale, blur sigma, threshold, intensity (water) or mud blur sigma, mud?
SPATTER = (
    (0.65, 0.3, 4, 0.69, 0.6, 0),
    (0.65, 0.3, 3, 0.68, 0.6, 0),
    (0.65, 0.3, 2, 0.68, 0.5, 0),
    (0.65, 0.3, 1, 0.65, 1.5, 1),
    (0.67, 0.4, 1, 0.65, 1.5, 1),
)
WATER = (175 / 255, 238 / 255, 238 / 255)
MUD = (63 / 255, 42 / 255, 20 / 255)
SOBEL_X = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])
EMBOSS = torch.tensor([[-2.0, -1, 0], [-1, 1, 1], [0, 1, 2]])


def canny(img: Tensor, low: float, high: float) -> Tensor:
    """Canny edges (N, 1, H, W) of 0..255 images: 3 x 3 Sobel, L1 magnitude, non-maximum
    suppression in four directions, hysteresis by 8-connected growth from strong edges."""
    gx = _ops.filter2d(img, SOBEL_X, "replicate")
    gy = _ops.filter2d(img, SOBEL_X.T, "replicate")
    mag = gx.abs() + gy.abs()
    p = F.pad(mag, (1, 1, 1, 1))  # zero border for the comparisons

    def at(dy: int, dx: int) -> Tensor:
        h, w = mag.shape[-2:]
        return p[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    ax, ay = gx.abs(), gy.abs()
    horizontal = ay < ax * 0.41421356
    vertical = ay > ax * 2.41421356
    s = torch.where(gx * gy < 0, -1, 1)
    diag_a = torch.where(s > 0, at(-1, -1), at(-1, 1))
    diag_b = torch.where(s > 0, at(1, 1), at(1, -1))
    peak = torch.where(
        horizontal,
        (mag > at(0, -1)) & (mag >= at(0, 1)),
        torch.where(
            vertical, (mag > at(-1, 0)) & (mag >= at(1, 0)), (mag > diag_a) & (mag > diag_b)
        ),
    )
    weak = peak & (mag > low)
    return hysteresis(weak, weak & (mag > high))


def hysteresis(weak: Tensor, strong: Tensor) -> Tensor:
    """The weak edges (N, 1, H, W) 8-connected to a strong one in the same image: the connected
    components of the weak edges that hold a strong one (``scipy.ndimage.label``, all images at
    once with no connection across them)."""
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True  # 8-connected within an image
    labels, count = label(weak[:, 0].cpu().numpy(), structure)
    keep = np.zeros(count + 1, dtype=bool)
    keep[labels[strong[:, 0].cpu().numpy()]] = True
    keep[0] = False
    return torch.from_numpy(keep[labels])[:, None].to(weak.device)


def edge_distance(edges: Tensor, cap: float) -> Tensor:
    """Euclidean distance to the nearest edge pixel of the same image, capped at ``cap``
    (``scipy.ndimage.distance_transform_edt``; OpenCV's 5 x 5 mask approximates it within 2%)."""
    e = edges[:, 0].cpu().numpy()
    d = np.full(e.shape, cap)  # no edge at all: beyond the cap, as OpenCV's
    for i in np.flatnonzero(e.any((1, 2))):  # one image at a time: faster than one 3-D transform
        d[i] = distance_transform_edt(~e[i])
    return torch.from_numpy(d).clamp(max=cap)[:, None].to(edges.device)


def equalize_hist(img: Tensor) -> Tensor:
    """OpenCV's ``equalizeHist`` per image of integer values 0..255, shape (N, 1, H, W)."""
    n = img.shape[0]
    flat = img.reshape(n, -1).long()
    hist = torch.zeros(n, 256, device=img.device).scatter_add_(
        1, flat, torch.ones_like(flat).float()
    )
    total = flat.shape[1]
    first = (hist > 0).float().argmax(1, keepdim=True)
    h0 = hist.gather(1, first)
    scale = 255.0 / (total - h0).clamp(min=1)
    lut = torch.round((hist.cumsum(1) - h0) * scale).clamp(0, 255)
    lut = torch.where(h0 == total, first.float().expand(-1, 256), lut)
    return lut.gather(1, flat).reshape(img.shape).to(img.dtype)


def _water(x: Tensor, liquid: Tensor, intensity: float) -> Tensor:
    u8 = torch.floor(liquid * 255).clamp(0, 255)
    dist = edge_distance(canny(u8, 50, 150), 20.0).to(x.dtype)
    dist = torch.floor(_ops.box_blur(dist))
    dist = equalize_hist(dist)
    dist = torch.round(_ops.filter2d(dist, EMBOSS, "reflect101")).clamp(0, 255)
    dist = _ops.box_blur(dist)
    m = u8 * dist
    peak = m.amax((2, 3), keepdim=True)
    m = torch.where(peak > 0, m / peak.clamp(min=1e-12), torch.zeros_like(m)) * intensity
    color = torch.tensor(WATER, dtype=x.dtype, device=x.device).reshape(1, 3, 1, 1)
    return (x + m * color).clamp(0, 1)


def _mud(x: Tensor, liquid: Tensor, threshold: float, sigma: float) -> Tensor:
    m = _ops.gaussian_blur((liquid > threshold).to(x.dtype), sigma)
    m = torch.where(m < 0.8, torch.zeros_like(m), m)
    color = torch.tensor(MUD, dtype=x.dtype, device=x.device).reshape(1, 3, 1, 1)
    return (x * (1 - m) + color * m).clamp(0, 1)


def _liquid(z: Tensor, loc: float, scale: float, sigma: float, threshold: float) -> Tensor:
    """The liquid layer: the Gaussian field ``loc + scale z`` blurred and thresholded."""
    liquid = _ops.gaussian_blur(loc + scale * z, sigma)
    return torch.where(liquid < threshold, torch.zeros_like(liquid), liquid)


@register("spatter", "weather", SPATTER, common=False, rgb=True)
def spatter(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    """Water drops (s1-s3), or mud splashes with s3's water drops over them (s4, s5)."""
    n, _, h, w = x.shape
    fields = torch.randn((2, n, 1, h, w), generator=gen, dtype=x.dtype, device=x.device)
    loc, scale, sigma, threshold, strength, mud = SPATTER[severity - 1]
    if not mud:
        return _water(x, _liquid(fields[0], loc, scale, sigma, threshold), strength)
    x = _mud(x, _liquid(fields[1], loc, scale, sigma, threshold), threshold, strength)
    loc, scale, sigma, threshold, strength, _ = SPATTER[2]
    return _water(x, _liquid(fields[0], loc, scale, sigma, threshold), strength)
