"""Accuracy and robust accuracy under relative weight noise of growing size: every parameter of
the chosen layers multiplied by ``1 + sigma * N(0, 1)`` (independently per entry), the whole
model or one layer at a time, averaged over a few draws."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from robustlab.attacks import evaluate
from robustlab.attacks.base import predict
from robustlab.data import Dataset
from robustlab.errors import RobustlabError
from robustlab.sensitivity.layers import Layer, layers

Progress = Callable[[str], None]
LEVELS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)


def check_levels(levels: Sequence[float], what: str = "levels") -> list[float]:
    """Noise sizes: finite numbers >= 0, at least one."""
    values = [float(v) for v in levels]
    if not values or any(not (v >= 0 and v < float("inf")) for v in values):
        raise RobustlabError(f"{what} must be finite numbers >= 0; found {list(levels)}")
    return values


@dataclass(frozen=True)
class NoiseCurves:
    """Per scope (``model`` or a layer), accuracy and robust accuracy at each noise size."""

    levels: list[float]
    draws: int
    eps: float | None
    robust_n: int
    curves: list[
        dict
    ]  # {layer, points: [{sigma, clean_accuracy, clean_std, robust_accuracy, robust_std}]}
    seconds: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _mean_std(values: list[float]) -> tuple[float, float]:
    t = torch.tensor(values, dtype=torch.float64)
    return float(t.mean()), float(t.std(unbiased=False)) if len(values) > 1 else 0.0


def noise_curves(
    model: nn.Module,
    data: Dataset,
    *,
    levels: Sequence[float] = LEVELS,
    draws: int = 3,
    eps: float | None = None,
    robust_n: int = 100,
    suite: str = "fast",
    per_layer: bool = True,
    groups: list[Layer] | None = None,
    batch_size: int = 256,
    seed: int = 0,
    progress: Progress | None = None,
) -> NoiseCurves:
    """Clean accuracy on ``data`` and, with ``eps``, robust accuracy (Linf, the attack ``suite``,
    on the first ``robust_n`` examples) of noisy copies of ``model``."""

    levels = check_levels(levels)
    if draws < 1 or robust_n < 1:
        raise RobustlabError(f"draws and robust_n must be positive; found {draws}, {robust_n}")
    start = time.perf_counter()
    noisy = copy.deepcopy(model).eval()
    groups = groups or layers(noisy)
    named = dict(noisy.named_parameters())
    scopes = [("model", [p for g in groups for p in g.params])]
    if per_layer:
        scopes += [(g.name, list(g.params)) for g in groups]
    saved = {n: t.detach().clone() for n, t in named.items()}
    gen = torch.Generator().manual_seed(seed)
    robust_data = data.subset(robust_n)
    curves = []
    for scope, names in scopes:
        if progress:
            progress(f"weight noise on {scope}: {len(levels)} sizes x {draws} draws")
        points = []
        for sigma in levels:
            clean, robust = [], []
            for _ in range(draws if sigma > 0 else 1):
                with torch.no_grad():
                    for n in names:
                        w = saved[n]
                        noise = torch.randn(w.shape, generator=gen, dtype=w.dtype)
                        named[n].copy_(w * (1 + sigma * noise))
                clean.append(float((predict(noisy, data.x, batch_size) == data.y).float().mean()))
                if eps is not None:
                    r = evaluate(noisy, robust_data, [eps], "inf", suite=suite,
                                 batch_size=batch_size, seed=seed)  # fmt: skip
                    robust.append(r.robust_accuracy)
                with torch.no_grad():
                    for n in names:
                        named[n].copy_(saved[n])
            c, cs = _mean_std(clean)
            r, rs = _mean_std(robust) if robust else (None, None)
            points.append({"sigma": sigma, "clean_accuracy": c, "clean_std": cs,
                           "robust_accuracy": r, "robust_std": rs})  # fmt: skip
        curves.append({"layer": scope, "points": points})
    return NoiseCurves(levels, draws, eps, len(robust_data), curves, time.perf_counter() - start)
