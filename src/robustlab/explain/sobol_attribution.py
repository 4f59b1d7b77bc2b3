"""Sobol attribution on a grid of image regions (Fel et al. 2021, arXiv:2111.04138)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlab.errors import RobustlabError
from robustlab.explain.base import ExplainResult, Target, blocks, check_positive, register, run
from robustlab.explain.sobol import sobol_design

PERTURBATIONS = ("inpainting", "blur", "amplitude")


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of (N, C, H, W) images with edge replication."""
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    y = F.pad(x, (r, r, r, r), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def perturb(x: Tensor, masks: Tensor, kind: str, baseline: Tensor | float, sigma: float) -> Tensor:
    """Images ``x`` (B, C, H, W) perturbed where the upsampled ``masks`` (B, 1, H, W) are low:
    inpainting x M + b (1 - M), blur x M + blur(x) (1 - M), amplitude x + sigma (M - 0.5)."""
    if kind == "amplitude":
        return x + sigma * (masks - 0.5)
    other = baseline if kind == "inpainting" else gaussian_blur(x, sigma)
    return x * masks + other * (1 - masks)


@register("sobol")
@dataclass(frozen=True)
class SobolAttribution:
    """Total-order Sobol indices of the score over a ``grid`` x ``grid`` partition of the image,
    from a scrambled Sobol design of ``n_designs`` points and Jansen's estimator: n_designs
    (grid^2 + 1) forward passes per image, streamed ``batch_size`` at a time with running sums.
    ``sigma``: blur width in pixels (default H / 8) or amplitude scale (default 1)."""

    grid: int = 8
    n_designs: int = 32
    perturbation: str = "inpainting"
    baseline: float = 0.0
    sigma: float | None = None
    batch_size: int = 512
    seed: int = 0

    def __call__(self, model: nn.Module, x: Tensor, target: Target = None) -> ExplainResult:
        x0 = x.detach()
        check_positive(grid=self.grid)
        if self.perturbation not in PERTURBATIONS:
            raise RobustlabError(
                f"unknown perturbation '{self.perturbation}'; known: {', '.join(PERTURBATIONS)}"
            )
        if x0.dim() != 4 or self.grid > min(x0.shape[2:]):
            raise RobustlabError(
                f"sobol expects images (N, C, H, W) of at least {self.grid}x{self.grid} pixels; "
                f"found {tuple(x0.shape)}"
            )
        h, w = x0.shape[2:]
        d, n = self.grid**2, self.n_designs
        a, b = (
            torch.as_tensor(m, dtype=x0.dtype, device=x0.device)
            for m in sobol_design(d, n, self.seed)
        )
        sigma = (
            self.sigma
            if self.sigma is not None
            else (1.0 if self.perturbation == "amplitude" else h / 8)
        )
        per_image = n * (d + 1)  # f(A), then f(A with column i from B) for each i

        def masks_of(design: Tensor) -> Tensor:
            k = torch.where(design < n, design, (design - n) % n)  # the row of A
            cells = a[k].clone()
            ab = design >= n
            i = (design[ab] - n) // n  # the cell whose value comes from B
            cells[ab.nonzero().squeeze(1), i] = b[k[ab], i]
            grid = cells.view(-1, 1, self.grid, self.grid)
            return F.interpolate(grid, size=(h, w), mode="nearest")

        def body(passes, score):
            fa = torch.zeros(len(x0), n, dtype=torch.float64, device=x0.device)
            sq = torch.zeros(len(x0), d, dtype=torch.float64, device=x0.device)
            for rows in blocks(len(x0) * per_image, self.batch_size):
                ex, design = rows // per_image, rows % per_image
                pert = perturb(x0[ex], masks_of(design), self.perturbation, self.baseline, sigma)
                s = passes.scores(pert, score, ex).double()
                is_a = design < n
                fa[ex[is_a], design[is_a]] = s[is_a]  # A rows of an image precede its others
                e, j = ex[~is_a], design[~is_a] - n
                diff = (fa[e, j % n] - s[~is_a]) ** 2
                sq.index_put_((e, j // n), diff, accumulate=True)
            var = fa.var(1, keepdim=True)
            total = torch.where(var > 0, sq / (2 * n * var.clamp_min(1e-300)), 0.0)
            return total.view(len(x0), self.grid, self.grid).to(x0.dtype), None

        return run(self.name, model, x, target, self.batch_size, body)
