"""Small transformations: translations by up to k pixels, small rotations and scale changes, with
realistic borders; worst-of-k accuracy and consistency (after "Lost in Translation", Shifman &
Weiss 2024, arXiv:2406.05213, and Engstrom et al. 2019, arXiv:1712.02779).

Borders: ``crop`` resamples a window that stays inside the image (crop-and-resize: a translation
moves a slightly smaller window, a rotation zooms in until no corner is empty), so no synthetic
pixels appear; ``reflect`` / ``replicate`` / ``zero`` fill what enters from outside. ``auto``
uses ``crop`` for images of at least 32 pixels on the short side and ``reflect`` for smaller ones,
where cropping would zoom too much. Zooming out (scale < 1) always needs a fill (``reflect`` when
``crop`` was asked for). Every family has a reference view (the centred crop in ``crop`` mode,
otherwise the image itself); consistency is the fraction of images whose prediction is the same
in every view of the family, worst-of-k accuracy the fraction correct in every view.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlab.corruptions.base import check_images
from robustlab.data import Dataset
from robustlab.errors import RobustlabError

BORDERS = ("auto", "crop", "reflect", "replicate", "zero")
PADDING = {"crop": "border", "reflect": "reflection", "replicate": "border", "zero": "zeros"}


@dataclass(frozen=True)
class TransformResult:
    """Per family: the views with their accuracy and the fraction of changed predictions,
    worst-of-k accuracy and consistency."""

    border: str
    families: tuple[dict, ...]
    forward_passes: int
    seconds: float

    def to_dict(self) -> dict:
        return {
            "border": self.border,
            "families": list(self.families),
            "forward_passes": self.forward_passes,
            "seconds": self.seconds,
        }


def resolve_border(border: str, shape: Sequence[int]) -> str:
    """``auto`` -> ``crop`` for images at least 32 pixels on the short side, else ``reflect``."""
    if border not in BORDERS:
        raise RobustlabError(f"border must be one of {', '.join(BORDERS)}; found {border!r}")
    if border == "auto":
        return "crop" if min(shape[-2:]) >= 32 else "reflect"
    return border


def warp(
    x: Tensor,
    *,
    angle: float = 0.0,
    zoom: float = 1.0,
    shift: tuple[float, float] = (0.0, 0.0),
    border: str = "reflect",
) -> Tensor:
    """Resample images (N, C, H, W): rotate by ``angle`` degrees, magnify by ``zoom`` and move the
    content by ``shift`` = (down, right) input pixels, with bilinear interpolation. ``crop``
    magnifies at least as much as needed for the whole view to stay inside the image."""
    h, w = x.shape[-2:]
    t = math.radians(angle)
    c, s = math.cos(t), math.sin(t)
    dy, dx = shift
    if border == "crop":
        inside = min(1 - 2 * abs(dy) / h, 1 - 2 * abs(dx) / w)
        if inside <= 0:
            raise RobustlabError(f"a shift of {shift} pixels leaves no {h} x {w} view to crop")
        zoom = max(zoom, (abs(c) + max(h / w, w / h) * abs(s)) / inside)
    theta = torch.tensor(
        [[c / zoom, -s * h / w / zoom, -2 * dx / w], [s * w / h / zoom, c / zoom, -2 * dy / h]],
        dtype=x.dtype,
        device=x.device,
    )
    grid = F.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(
        x, grid, mode="bilinear", padding_mode=PADDING[border], align_corners=False
    )


def default_families(max_shift: int, angles: Sequence[float], scales: Sequence[float]) -> dict:
    """View parameters per family: shifts (dy, dx) with max(|dy|, |dx|) <= k, angles, scales."""
    shifts = [
        (dy, dx)
        for dy in range(-max_shift, max_shift + 1)
        for dx in range(-max_shift, max_shift + 1)
        if (dy, dx) != (0, 0)
    ]
    return {"translation": shifts, "rotation": list(angles), "scale": list(scales)}


def _view(x: Tensor, family: str, param, border: str, max_shift: int) -> Tensor:
    """One view; ``param`` None is the family's reference view."""
    h, w = x.shape[-2:]
    if family == "translation":
        # crop mode: a window 2k pixels smaller than the image, moved by the shift, resized
        zoom = min(h / (h - 2 * max_shift), w / (w - 2 * max_shift)) if border == "crop" else 1.0
        return warp(x, zoom=zoom, shift=param or (0, 0), border=border)
    if param is None:
        return x
    if family == "rotation":
        return warp(x, angle=param, border=border)
    return warp(x, zoom=param, border="reflect" if border == "crop" and param < 1 else border)


def evaluate_transformations(
    model: nn.Module,
    data: Dataset,
    *,
    max_shift: int = 1,
    angles: Sequence[float] = (-10, -5, -2, 2, 5, 10),
    scales: Sequence[float] = (0.9, 0.95, 1.05, 1.1),
    border: str = "auto",
    batch_size: int = 256,
) -> TransformResult:
    """Accuracy under every view of each family, worst-of-k accuracy and consistency."""
    start = time.perf_counter()
    check_images(data.x)
    if max_shift < 0 or 2 * max_shift >= min(data.x.shape[-2:]):
        raise RobustlabError(
            f"max shift must be >= 0 and below half the image size; found {max_shift}"
        )
    border = resolve_border(border, data.x.shape)
    families = default_families(max_shift, angles, scales)
    n, passes, out = len(data), 0, []
    for family, params in families.items():
        if not params:
            continue
        ref_pred = torch.empty(n, dtype=torch.long)
        preds = torch.empty(len(params), n, dtype=torch.long)
        for i in range(0, n, batch_size):
            xb = data.x[i : i + batch_size]
            with torch.no_grad():
                ref_pred[i : i + len(xb)] = model(
                    _view(xb, family, None, border, max_shift)
                ).argmax(1)
                for k, p in enumerate(params):
                    preds[k, i : i + len(xb)] = model(
                        _view(xb, family, p, border, max_shift)
                    ).argmax(1)
        passes += n * (len(params) + 1)
        y = data.y
        correct = preds == y
        same = preds == ref_pred
        views = [
            {
                "param": list(p) if isinstance(p, tuple) else p,
                "accuracy": float(correct[k].float().mean()),
                "changed": float((~same[k]).float().mean()),
            }
            for k, p in enumerate(params)
        ]
        out.append(
            {
                "family": family,
                "reference_accuracy": float((ref_pred == y).float().mean()),
                "views": views,
                "worst_case_accuracy": float((correct.all(0) & (ref_pred == y)).float().mean()),
                "consistency": float(same.all(0).float().mean()),
                "mean_accuracy": float(correct.float().mean()),
            }
        )
    return TransformResult(border, tuple(out), passes, time.perf_counter() - start)
