"""Noise for tabular inputs (N, F): Gaussian and uniform feature noise scaled by each feature's
standard deviation, and feature dropout (a random fraction of the values replaced by the
feature's mean), at five severities; results are clipped to the data's declared range."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from robustlab.corruptions.base import SEVERITIES
from robustlab.errors import RobustlabError

# noise standard deviation in units of each feature's standard deviation; dropout probability
TABULAR = {
    "gaussian": (0.1, 0.2, 0.3, 0.5, 1.0),
    "uniform": (0.1, 0.2, 0.3, 0.5, 1.0),
    "dropout": (0.05, 0.1, 0.2, 0.3, 0.5),
}


def tabular_names(spec: str | Sequence[str] = "all") -> list[str]:
    """Names from ``all`` or a comma-separated list of gaussian, uniform, dropout."""
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for item in (i for i in items if i):
        group = list(TABULAR) if item == "all" else [item]
        for name in group:
            if name not in TABULAR:
                raise RobustlabError(
                    f"unknown tabular corruption '{name}'; known: all, {', '.join(TABULAR)}"
                )
            if name not in names:
                names.append(name)
    if not names:
        raise RobustlabError(f"expected at least one corruption; found {spec!r}")
    return names


def corrupt_tabular(
    x: Tensor,
    name: str,
    severity: int = 1,
    seed: int = 0,
    *,
    scale: Tensor | None = None,
    fill: Tensor | None = None,
    lower: float | None = None,
    upper: float | None = None,
) -> Tensor:
    """Corrupt rows ``x`` (N, F). ``scale`` (F,) is each feature's standard deviation and ``fill``
    (F,) the dropout value (defaults: the statistics of ``x``); ``lower`` / ``upper`` clip."""
    if not isinstance(x, Tensor) or x.dim() != 2 or not x.is_floating_point():
        found = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise RobustlabError(f"expected float tabular inputs of shape (N, F); found {found}")
    if name not in TABULAR:
        raise RobustlabError(f"unknown tabular corruption '{name}'; known: {', '.join(TABULAR)}")
    if severity not in SEVERITIES:
        raise RobustlabError(f"severity must be an integer in 1..5; found {severity!r}")
    gen = torch.Generator(device=x.device).manual_seed(int(seed))
    c = TABULAR[name][severity - 1]
    scale = x.std(0) if scale is None else scale.to(x)
    if name == "gaussian":
        out = x + c * scale * torch.randn(x.shape, generator=gen, dtype=x.dtype, device=x.device)
    elif name == "uniform":  # the same standard deviation as the Gaussian of this severity
        u = torch.rand(x.shape, generator=gen, dtype=x.dtype, device=x.device) * 2 - 1
        out = x + c * math.sqrt(3) * scale * u
    else:
        fill = x.mean(0) if fill is None else fill.to(x)
        drop = torch.rand(x.shape, generator=gen, device=x.device) < c
        out = torch.where(drop, fill.expand_as(x), x)
    if lower is not None or upper is not None:
        out = out.clamp(lower, upper)
    return out
