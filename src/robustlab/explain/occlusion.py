"""Occlusion: the score drop when a sliding window is replaced by a baseline."""

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


def _pair(v: int | tuple[int, ...], k: int) -> tuple[int, ...]:
    return (v,) * k if isinstance(v, int) else tuple(v)


def window_masks(spatial: tuple[int, ...], window, stride) -> Tensor:
    """One boolean mask per window position over the trailing ``spatial`` dims: (P, *spatial)."""
    k = len(spatial)
    window, stride = _pair(window, k), _pair(stride, k)
    if len(window) != k or len(stride) != k:
        raise RobustlabError(f"window and stride need {k} sizes; found {window} and {stride}")
    if any(w < 1 or w > s for w, s in zip(window, spatial, strict=True)) or min(stride) < 1:
        raise RobustlabError(
            f"window must fit the input {spatial} and stride be positive; "
            f"found window {window}, stride {stride}"
        )
    starts = [range(0, s - w + 1, t) for s, w, t in zip(spatial, window, stride, strict=True)]
    grids = torch.meshgrid(*[torch.tensor(list(r)) for r in starts], indexing="ij")
    corners = torch.stack([g.reshape(-1) for g in grids], 1)  # (P, k)
    masks = torch.ones((len(corners), *spatial), dtype=torch.bool)
    for d in range(k):
        pos = torch.arange(spatial[d])
        inside = (pos >= corners[:, d : d + 1]) & (pos < corners[:, d : d + 1] + window[d])
        masks &= inside.view(len(corners), *([1] * d), spatial[d], *([1] * (k - d - 1)))
    return masks


@register("occlusion")
@dataclass(frozen=True)
class Occlusion:
    """Occlusion (Zeiler and Fergus 2014, arXiv:1311.2901): each position's attribution is the
    mean score drop f(x) - f(x occluded) over the windows covering it. Windows span every channel
    of (C, H, W) inputs; ``window=None`` takes a quarter of the height, ``stride=None`` half the
    window."""

    signed: ClassVar[bool] = True  # attributions have a sign (a diverging colour map)

    window: int | tuple[int, ...] | None = None
    stride: int | tuple[int, ...] | None = None
    baseline: float | Tensor = 0.0
    batch_size: int = 512

    def __call__(self, model: nn.Module, x: Tensor, target: Target = None) -> ExplainResult:
        x0 = x.detach()
        if x0.dim() not in (2, 4):
            raise RobustlabError(
                f"occlusion expects inputs (N, D) or (N, C, H, W); found {tuple(x0.shape)}"
            )
        spatial = tuple(x0.shape[2:]) if x0.dim() == 4 else tuple(x0.shape[1:])
        window = self.window or max(1, spatial[0] // 4)
        stride = self.stride or max(1, _pair(window, 1)[0] // 2)
        masks = window_masks(spatial, window, stride).to(x0.device)
        if x0.dim() == 4:
            masks = masks.unsqueeze(1)  # every channel
        base = baseline_like(self.baseline, x0)
        n_pos = len(masks)

        def body(passes, score):
            check_positive(batch_size=self.batch_size)
            clean = torch.cat(
                [passes.scores(x0[r], score, r) for r in blocks(len(x0), self.batch_size)]
            )
            total = torch.zeros(x0.shape, dtype=torch.float64, device=x0.device)
            for rows in blocks(len(x0) * n_pos, self.batch_size):
                ex, pos = rows // n_pos, rows % n_pos
                m = masks[pos]
                drop = clean[ex] - passes.scores(torch.where(m, base[ex], x0[ex]), score, ex)
                shape = (-1,) + (1,) * (x0.dim() - 1)
                src = (m.double() * drop.double().view(shape)).expand(len(rows), *x0.shape[1:])
                total.index_add_(0, ex.to(x0.device), src)
            counts = masks.sum(0).double().clamp_min(1)  # positions no window covers stay 0
            return (total / counts).to(x0.dtype), None

        return run(self.name, model, x, target, self.batch_size, body)
