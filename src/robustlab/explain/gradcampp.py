"""Smooth Grad-CAM++: Grad-CAM++ weights from gradients averaged over noisy copies of the input."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlab.explain.base import (
    ExplainResult,
    Target,
    blocks,
    check_positive,
    example_noise,
    register,
    run,
    shard_offset,
)
from robustlab.explain.gradcam import _Split, find_layer
from robustlab.explain.layers import traced


def gradcampp_map(a: Tensor, d1: Tensor, d2: Tensor, d3: Tensor) -> Tensor:
    """ReLU(sum_k w_k A_k) with w_k = sum_ij alpha_kij ReLU(D1_kij) and alpha = D2 / (2 D2 +
    sum_ij A_kij D3) (Chattopadhyay et al. 2018, arXiv:1710.11063, with Y = exp(S) so the second
    and third derivatives are powers of the first); alpha is 0 where its denominator is."""
    denom = 2 * d2 + (a * d3).sum((2, 3), keepdim=True)
    safe = torch.where(denom != 0, denom, torch.ones_like(denom))
    alpha = torch.where(denom != 0, d2 / safe, torch.zeros_like(d2))
    w = (alpha * d1.clamp_min(0)).sum((2, 3), keepdim=True)
    return (w * a).sum(1, keepdim=True).clamp_min(0)


@register("smooth-grad-cam++")
@dataclass(frozen=True)
class SmoothGradCAMpp:
    """Smooth Grad-CAM++ (Omeiza et al. 2019, arXiv:1908.01224): Grad-CAM++ on ``layer`` (default
    the last Conv2d) with the first, second and third powers of the gradient averaged over
    ``n_samples`` inputs with Gaussian noise of standard deviation ``sigma`` (input units; drawn
    per input position and ``seed``); the activations are the clean input's. Upsampled bilinearly
    and repeated over the input's channels like Grad-CAM."""

    layer: str | None = None
    n_samples: int = 16
    sigma: float = 0.15
    upsample: bool = True
    batch_size: int = 512
    seed: int = 0
    shard: tuple[int, int] | None = None  # see base.shard_offset

    def __call__(self, model: nn.Module, x: Tensor, target: Target = None) -> ExplainResult:
        check_positive(n_samples=self.n_samples)
        gm = traced(model, "smooth-grad-cam++")
        node = find_layer(gm, self.layer)
        x0 = x.detach()
        n = self.n_samples

        def body(passes, score):
            acts = []
            for rows in blocks(len(x0), self.batch_size):
                split = _Split(gm, node)
                with torch.no_grad():
                    split.run(x0[rows])
                passes.n_forward += len(rows)
                acts.append(split.activation.detach())
            a = torch.cat(acts).double()
            moments = torch.zeros((3, *a.shape), dtype=torch.float64, device=x0.device)
            for rows in blocks(len(x0) * n, self.batch_size):
                ex, k = rows // n, rows % n
                noise = example_noise(self.seed, ex + shard_offset(self), k, x0.shape[1:], x0)
                split = _Split(gm, node)
                with torch.enable_grad():
                    s = score(split.run(x0[ex] + self.sigma * noise), ex)
                    passes.n_forward += len(rows)
                    (g,) = torch.autograd.grad(s.sum(), split.activation)
                passes.n_backward += len(rows)
                g = g.double()
                for p in range(3):
                    moments[p].index_add_(0, ex.to(x0.device), g ** (p + 1))
            cam = gradcampp_map(a, *(moments / n))
            if self.upsample and x0.dim() == 4:
                cam = F.interpolate(cam, size=x0.shape[2:], mode="bilinear", align_corners=False)
                cam = cam.expand(-1, x0.shape[1], -1, -1).contiguous()
            return cam.to(x0.dtype), None

        return run(self.name, model, x, target, self.batch_size, body)
