"""Occlusion sensitivity with augmentation subspaces in deep feature space (OSA-DAS)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from robustlab.errors import RobustlabError
from robustlab.explain.base import (
    ExplainResult,
    Target,
    baseline_like,
    blocks,
    check_positive,
    register,
    run,
)
from robustlab.explain.occlusion import _pair, window_masks


@dataclass(frozen=True)
class Views:
    """``n`` augmentations of inputs of one shape, drawn once from a seed (the same views for
    every input, so an input's attributions do not depend on its batch): view 0 is the input
    itself, the others shift it by whole pixels (zeros enter), scale its contrast, add an offset
    and Gaussian noise."""

    shifts: Tensor  # (n, 2) integer shifts (rows, columns); zeros for flat inputs
    gains: Tensor  # (n,)
    offsets: Tensor  # (n,)
    noise: Tensor  # (n, *input shape)

    @classmethod
    def draw(cls, n: int, shape, *, shift: int, contrast: float, noise: float, seed: int):
        gen = torch.Generator().manual_seed(seed)
        image = len(shape) == 3
        shifts = torch.randint(-shift, shift + 1, (n, 2), generator=gen) if image else None
        if shifts is None:
            shifts = torch.zeros(n, 2, dtype=torch.long)
        gains = 1 + contrast * (2 * torch.rand(n, generator=gen, dtype=torch.float64) - 1)
        offsets = contrast / 2 * (2 * torch.rand(n, generator=gen, dtype=torch.float64) - 1)
        eps = noise * torch.randn((n, *shape), generator=gen, dtype=torch.float64)
        shifts[0], gains[0], offsets[0], eps[0] = 0, 1.0, 0.0, 0.0
        return cls(shifts, gains, offsets, eps)

    def __call__(self, x: Tensor, view: Tensor) -> Tensor:
        """Row ``i`` of ``x`` seen through view ``view[i]``."""
        out = torch.empty_like(x)
        for v in view.unique().tolist():
            rows = (view == v).nonzero()[:, 0]
            xs = x[rows]
            dy, dx = self.shifts[v].tolist()
            if dy or dx:
                xs = _shift(xs, dy, dx)
            g, o = float(self.gains[v]), float(self.offsets[v])
            out[rows] = xs * g + o + self.noise[v].to(x.device, x.dtype)
        return out


def _shift(x: Tensor, dy: int, dx: int) -> Tensor:
    """Images (B, C, H, W) moved by (dy, dx) pixels; zeros fill what enters."""
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
        ..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def subspace(features: Tensor, dim: int) -> Tensor:
    """Orthonormal bases (..., K, dim) of the span of the leading ``dim`` left singular vectors
    of features (..., views, K): the subspace method's (uncentred) principal subspace."""
    u, _, _ = torch.linalg.svd(features.double().transpose(-1, -2), full_matrices=False)
    return u[..., :dim]


def orthogonal_degree(a: Tensor, b: Tensor) -> Tensor:
    """1 - mean squared cosine of the canonical angles between subspaces with orthonormal bases
    ``a`` and ``b`` (..., K, dim): 0 for the same subspace, 1 for orthogonal ones."""
    return 1 - (a.transpose(-1, -2) @ b).square().sum((-1, -2)) / a.shape[-1]


@register("osa-das")
@dataclass(frozen=True)
class OSADAS:
    """OSA-DAS (Valois, Niinuma and Fukui 2023, arXiv:2311.15022): occlusion sensitivity where
    an input and each occluded copy are represented by the subspace their ``n_augment``
    augmented views span in the model's output (deep feature) space; a window's sensitivity is
    the orthogonal degree between the reference and the occluded subspace (canonical angles),
    each position's attribution the mean over the windows covering it. Class-agnostic: the
    target only names the class reported. Windows as in occlusion (``None``: a quarter of the
    height, stride half the window); views: shifts up to ``shift`` pixels, contrast and offset
    within ``contrast``, noise of standard deviation ``noise``; subspaces of ``dim`` dimensions
    (None: 3, at most ``n_augment``)."""

    signed: ClassVar[bool] = False

    window: int | tuple[int, ...] | None = None
    stride: int | tuple[int, ...] | None = None
    baseline: float | Tensor = 0.0
    n_augment: int = 8
    dim: int | None = None  # None: 3, or n_augment when fewer
    shift: int = 1
    contrast: float = 0.1
    noise: float = 0.02
    seed: int = 0
    batch_size: int = 512

    def __call__(self, model: nn.Module, x: Tensor, target: Target = None) -> ExplainResult:
        x0 = x.detach()
        if x0.dim() not in (2, 4):
            raise RobustlabError(
                f"osa-das expects inputs (N, D) or (N, C, H, W); found {tuple(x0.shape)}"
            )
        check_positive(n_augment=self.n_augment)
        dim = min(3, self.n_augment) if self.dim is None else self.dim
        check_positive(dim=dim)
        if dim > self.n_augment:
            raise RobustlabError(f"dim must be at most n_augment ({self.n_augment}); found {dim}")
        if not (self.shift >= 0 and self.contrast >= 0 and self.noise >= 0):
            raise RobustlabError(
                "shift, contrast and noise must be >= 0; found "
                f"{self.shift}, {self.contrast}, {self.noise}"
            )
        spatial = tuple(x0.shape[2:]) if x0.dim() == 4 else tuple(x0.shape[1:])
        window = self.window or max(1, spatial[0] // 4)
        stride = self.stride or max(1, _pair(window, 1)[0] // 2)
        masks = window_masks(spatial, window, stride).to(x0.device)
        if x0.dim() == 4:
            masks = masks.unsqueeze(1)
        base = baseline_like(self.baseline, x0)
        n, n_aug, n_pos = len(x0), self.n_augment, len(masks)
        views = Views.draw(n_aug, x0.shape[1:], shift=self.shift, contrast=self.contrast,
                           noise=self.noise, seed=self.seed)  # fmt: skip

        def features(passes, imgs, view):
            with torch.no_grad():
                return passes.logits(views(imgs, view)).double()

        def body(passes, score):
            check_positive(batch_size=self.batch_size)
            ref = torch.cat([features(passes, x0[r // n_aug], r % n_aug)
                             for r in blocks(n * n_aug, self.batch_size)])  # fmt: skip
            k = ref.shape[1]
            if dim > k:
                raise RobustlabError(f"dim must be at most the outputs ({k}); found {dim}")
            occ = torch.empty(n * n_pos * n_aug, k, dtype=torch.float64, device=x0.device)
            for rows in blocks(n * n_pos * n_aug, self.batch_size):
                ex, pos, view = rows // (n_pos * n_aug), (rows // n_aug) % n_pos, rows % n_aug
                occluded = torch.where(masks[pos], base[ex], x0[ex])
                occ[rows] = features(passes, occluded, view)
            a = subspace(ref.view(n, 1, n_aug, k), dim)
            b = subspace(occ.view(n, n_pos, n_aug, k), dim)
            degree = orthogonal_degree(a, b).clamp_min(0)  # (n, positions)
            shape = (n, n_pos) + (1,) * (x0.dim() - 1)
            total = (masks[None].double() * degree.view(shape)).sum(1)
            counts = masks.sum(0).double().clamp_min(1)
            return (total / counts).expand(x0.shape).to(x0.dtype).contiguous(), None

        return run(self.name, model, x, target, self.batch_size, body)
